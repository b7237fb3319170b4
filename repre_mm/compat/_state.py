"""State shared by the patches of :mod:`repre_mm.compat`: which have been applied, and what each
replaced. Mutated in place only, so that every module that imported these names sees one set."""

# names of the patches applied, so that each applies once (imports are idempotent)
APPLIED = set()
# What each patch replaced, so that tests can show the failure it prevents.
ORIGINALS = {}
