"""Detection and instance segmentation on stride-4 features: torchvision's Mask R-CNN whose backbone is the
ResNet tail (layer2..4) + an FPN, fed with a feature map (f1, f2, or f3 decoded from a stream) instead of an
image.  torchvision's parts do the work (anchors, RPN, RoI heads, losses, post-processing); this module only
replaces the image front end: no resizing or normalisation (the features have neither), and the image size that
anchors and boxes refer to comes with the features (4x their grid).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

FEATURE_STRIDE = 4  # f1, f2 and f3 are at 1/4 of the image


class TailFPN(nn.Module):
    """Stride-4 features -> FPN levels at strides 4, 8, 16, 32 (the features, then layer2, layer3, layer4 of
    the backbone's tail) and 64 (max-pooled).  The tail is the backbone's own, frozen, and not a submodule
    here (its weights belong to the backbone; the detector's checkpoint holds only the FPN and the heads):
    the frozen-feature protocol of the linear probe, applied to detection."""

    def __init__(self, tail: nn.Module, in_channels: int, out_channels: int = 64):
        super().__init__()
        self.__dict__["tail"] = tail  # shared, not registered
        widths = [in_channels] + [layer[-1].conv2.out_channels if hasattr(layer[-1], "conv2") else
                                  layer[-1].conv3.out_channels for layer in (tail.layer2, tail.layer3, tail.layer4)]
        self.fpn = FeaturePyramidNetwork(widths, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = int(out_channels)

    def forward(self, f: torch.Tensor) -> OrderedDict:
        levels = [f] + self.tail(f, return_all=True)
        return self.fpn(OrderedDict((str(i), v) for i, v in enumerate(levels)))


class FeatureMaskRCNN(MaskRCNN):
    """torchvision's :class:`~torchvision.models.detection.MaskRCNN` on feature maps.

    ``forward(features, targets=None)``: ``features`` (B, C, h, w) at stride 4; boxes and masks are in the
    pixels of the (4h, 4w) image.  Training returns the loss dict, eval one dict per image (``boxes``,
    ``scores``, ``labels``, ``masks`` (K, 1, 4h, 4w)), as torchvision's."""

    def __init__(self, tail: nn.Module, in_channels: int, num_classes: int, fpn_channels: int = 256,
                 anchor_sizes=(32, 64, 128, 256, 512), box_hidden: int = 1024, mask_channels: int = 256, **kwargs):
        """``num_classes`` counts the background; torchvision's defaults (FPN 256, box head 1024, mask head
        4 x 256, anchors 32..512) are the paper profile's; the laptop profile narrows them."""
        anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
        super().__init__(TailFPN(tail, in_channels, fpn_channels), rpn_anchor_generator=anchors,
                         box_head=TwoMLPHead(fpn_channels * 7 * 7, box_hidden),
                         box_predictor=FastRCNNPredictor(box_hidden, num_classes),
                         mask_head=MaskRCNNHeads(fpn_channels, (mask_channels,) * 4, 1),
                         mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes), **kwargs)

    def forward(self, features: torch.Tensor, targets=None):
        if self.training and targets is None:
            raise ValueError("FeatureMaskRCNN: training needs targets (boxes, labels, masks per image)")
        n, _, h, w = features.shape
        size = (h * FEATURE_STRIDE, w * FEATURE_STRIDE)
        # anchors and RoI scales read only the tensor's spatial size and the image sizes: no pixels needed
        images = ImageList(features.new_empty(n, 0, *size), [size] * n)
        levels = self.backbone(features)
        proposals, proposal_losses = self.rpn(images, levels, targets)
        detections, detector_losses = self.roi_heads(levels, proposals, images.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        # masks pasted into the image (boxes unchanged: the "original" size is the size)
        return self.transform.postprocess(detections, images.image_sizes, images.image_sizes)
