# Mask R-CNN + pre-trained ViT-S/16 + simple feature pyramid (the shipped COCO recipe,
# mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco.py) on your own COCO-format instance dataset:
#   data/my_instances/
#   ├── annotations/instances_train.json   # COCO instances (e.g. written by
#   ├── annotations/instances_test.json    #   tools/dataset_converters/masks_to_coco.py)
#   └── images/                            # file_name in the JSONs is relative to this folder
# Change the lines under "the data" (in a copy: CONFIG=my_copy.py picks it), then:
#   bash tools/benchmarks/transfer.sh coco-custom-mask-rcnn-vit-s PRETRAIN.pth 8
# (export, strict backbone loading, train, test: box and mask AP of the test split;
# docs/custom_dataset.md has the whole recipe).
# 8 GPUs x 2 = 16; 12 epochs, the warm-up one epoch whatever the dataset's size.
_base_ = './mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco.py'

# --- the data ----------------------------------------------------------------------------------
data_root = 'data/my_instances/'
classes = ('horse', )  # the names of the JSONs' categories, in their order
train_ann_file = 'annotations/instances_train.json'  # relative to data_root
test_ann_file = 'annotations/instances_test.json'
image_prefix = 'images/'  # file_name is relative to data_root + image_prefix ('' for data_root)
scale = (1333, 800)  # (long, short) side each image is resized to fit, its aspect ratio kept
max_epochs = 12  # a few hundred images need more (e.g. 100): 12 epochs are then ~200 iterations

num_classes = len(classes)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file=train_ann_file,
                 data_prefix=dict(img=image_prefix), metainfo=dict(classes=classes),
                 pipeline=train_pipeline))
# This layout has no validation split: validation reads the test split, and only once, after
# the last epoch (the same numbers as tools/test.py), so that no epoch or setting is chosen on
# the test split. Hold out a val JSON of train images and point val_dataloader at it to tune.
test_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file=test_ann_file,
                 data_prefix=dict(img=image_prefix), metainfo=dict(classes=classes),
                 pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(ann_file=data_root + test_ann_file, metric=['bbox', 'segm'])
val_evaluator = test_evaluator

# --- the model and schedule --------------------------------------------------------------------
model = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes),
                           mask_head=dict(num_classes=num_classes)))
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    # mmdet's 500 warm-up iterations would be several epochs of a small dataset
    dict(type='LinearLR', start_factor=0.001, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, gamma=0.1,
         milestones=[round(max_epochs * 8 / 12), round(max_epochs * 11 / 12)]),
]
