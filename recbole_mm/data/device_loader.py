"""Training batches drawn on the model's device (config key ``train_data_on_device``).

RecBole's :class:`~recbole.data.dataloader.TrainDataLoader` gathers every batch on the CPU (``dataset[index]``
over all fields) and the trainer copies it to the GPU. For a sequential model trained with cross-entropy over
all items that gather is the whole batch construction, and on a GPU it costs more than the step itself: an
Office-sized MISSRec epoch (597 batches of 1,024 histories of 50 items) spends seconds in it. With
``train_data_on_device: True`` the training interactions are copied to the device once, and each epoch draws a
permutation there and slices batches from it.

Same semantics as RecBole's loader: every training row exactly once per epoch, in batches of
``train_batch_size`` (the last one smaller), shuffled when ``shuffle`` is on. The order differs (a device
generator seeded with ``seed`` draws it), so runs are reproducible but not batch-for-batch equal to RecBole's.
Only loaders without negative sampling, data transform or distributed sampler qualify; anything else is a
:class:`~recbole_mm.errors.ConfigError`.
"""

from typing import Iterator

import torch
from recbole.data.interaction import Interaction

from recbole_mm.errors import ConfigError


class DeviceTrainLoader:
    """Wraps a RecBole ``TrainDataLoader``: same length, batch size and attributes, batches sliced on ``device``.

    Args:
        loader: the RecBole training dataloader (its dataset's ``inter_feat`` are the training rows).
        config: the run's config (``seed``, ``transform``, ``single_spec``).
        device: where the rows live and batches are drawn.

    Iterating yields :class:`~recbole.data.interaction.Interaction` batches whose tensors are on ``device``.
    """

    def __init__(self, loader, config, device: torch.device):
        reasons = []
        if getattr(loader, "_sampler", None) is not None:
            reasons.append("negative sampling is on (set train_neg_sample_args: ~)")
        if config["transform"]:
            reasons.append(f"a data transform is set (transform: {config['transform']})")
        if not config["single_spec"]:
            reasons.append("training is distributed (each rank needs RecBole's DistributedSampler)")
        if reasons:
            raise ConfigError(
                f"config key 'train_data_on_device': cannot draw batches on the device: {'; '.join(reasons)}"
            )
        self.loader = loader
        self.device = torch.device(device)
        self.rows = loader._dataset.inter_feat.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config["seed"])

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Interaction]:
        n_rows, step = len(self.rows), self.loader.step
        if self.loader.shuffle:
            order = torch.randperm(n_rows, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n_rows, device=self.device)
        for start in range(0, n_rows, step):
            yield self.rows[order[start : start + step]]

    def __getattr__(self, name):  # dataset, shuffle, step, sample_size, ... of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)
