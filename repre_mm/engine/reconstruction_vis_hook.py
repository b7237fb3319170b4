"""A few fixed reconstructions sent to the visualizer during pre-training (TensorBoard, W&B, or
mmengine's local files, whichever backends the config selects)."""
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpretrain.registry import HOOKS
from ..visualization.reconstruction import normalise, reconstruction_grid, require_repre
from ..visualization.utils import input_size, read_image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


@HOOKS.register_module()
class ReconstructionVisualizationHook(Hook):
    """Every ``interval`` epochs (and after the last), reconstruct a few fixed images with the
    RePre decoder and send the grid (inputs / reconstructions / |error|) to
    ``runner.visualizer.add_image(name, grid, step=epoch)``.

    The images are chosen once, before training, so every epoch shows the same ones: the first
    ``num_images`` of ``image_folder`` (sorted file names; resized and centre-cropped to the
    encoder's input size), or else the first ``num_images`` items of the train dataset through
    its own pipeline, first view of each (one random augmentation, then kept).

    Args:
        interval (int): epochs between grids. Defaults to 1.
        num_images (int): images in the grid. Defaults to 4.
        image_folder (str, optional): a folder of images to show instead of the train data.
        name (str): the image's name in the visualizer. Defaults to ``'reconstructions'``.
        scale (int, optional): upscaling of the grid; defaults to panels of >= 112 pixels.
    """
    priority = 'LOW'

    def __init__(self, interval: int = 1, num_images: int = 4,
                 image_folder: Optional[str] = None, name: str = 'reconstructions',
                 scale: Optional[int] = None):
        if interval < 1 or num_images < 1:
            raise ValueError(f'interval and num_images must be >= 1, got {interval} and '
                             f'{num_images}.')
        self.interval, self.num_images = interval, num_images
        self.image_folder, self.name, self.scale = image_folder, name, scale
        self._images: Optional[torch.Tensor] = None  # B x 3 x H x W, uint8, pipeline order

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        # fail at the start of a run, not after its first epoch
        require_repre(model, 'ReconstructionVisualizationHook')
        if self.image_folder is not None:
            self._images = self._from_folder(model)
        else:
            self._images = self._from_dataset(runner.train_dataloader.dataset, model)

    def _from_folder(self, model) -> torch.Tensor:
        if not osp.isdir(self.image_folder):
            raise FileNotFoundError(f'image_folder {self.image_folder} is not a folder.')
        files = sorted(f for f in os.listdir(self.image_folder)
                       if f.lower().endswith(IMAGE_SUFFIXES))[:self.num_images]
        if not files:
            raise FileNotFoundError(f'image_folder {self.image_folder} holds no image.')
        size = input_size(model)
        return torch.stack([
            torch.from_numpy(read_image(osp.join(self.image_folder, f), size)).permute(2, 0, 1)
            for f in files
        ])

    def _from_dataset(self, dataset, model) -> torch.Tensor:
        views: List[torch.Tensor] = []
        for index in range(min(self.num_images, len(dataset))):
            inputs = dataset[index]['inputs']
            # multi-view pipelines pack a list of views; the first is a full-size (global) one
            views.append(inputs[0] if isinstance(inputs, (list, tuple)) else inputs)
        if len({v.shape for v in views}) > 1:
            # e.g. random-size crops: bring them to the encoder's size to stack them
            size = input_size(model)
            views = [
                torch.nn.functional.interpolate(v[None].float(), size=size, mode='bilinear',
                                                align_corners=False)[0].round().byte()
                for v in views
            ]
        return torch.stack(views)

    def after_train_epoch(self, runner) -> None:
        if not (self.every_n_epochs(runner, self.interval) or self.is_last_train_epoch(runner)):
            return
        if not is_main_process():
            return  # the visualizer writes on rank 0 only; the others need not decode
        model = self._model(runner)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                grid = reconstruction_grid(model, normalise(model, self._images), self.scale)
        finally:
            model.train(was_training)
        # the runner counts the finished epoch only after these hooks
        runner.visualizer.add_image(self.name, grid, step=runner.epoch + 1)
