"""Trainers of recbole_mm models. A model declares its trainer (``trainer_class``, set on each family base) and
:func:`recbole_mm.registry.get_trainer` reads it: :class:`PretrainTrainer` for the multi-modal sequential family,
:class:`LongSequenceTrainer` for the long-sequence family, :class:`MMSSLTrainer` for MMSSL. Models that declare none
(RecBole's) use RecBole's trainer (``recbole.trainer.Trainer`` for most), with
:class:`AtomicCheckpointMixin` in front so that every checkpoint a recbole_mm run writes is atomic, and
:class:`DeviceLossMixin` where RecBole's epoch loop is used unchanged (:func:`for_recbole_mm`).
"""

import os
from time import time
from typing import Optional

import torch
import torch.distributed as dist
from recbole.trainer import Trainer
from recbole.utils import get_gpu_usage, set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_mm.errors import ConfigError


class AtomicCheckpointMixin:
    """Write checkpoints to a temporary file beside the target, then rename: an interrupted save never
    leaves a truncated checkpoint under the final name (RecBole's ``Trainer`` writes in place).

    The checkpoint folder is created before RecBole's ``Trainer.__init__`` looks for it: RecBole checks, then
    creates, and of several processes started together (torchrun) one that checks before another creates fails.
    """

    def __init__(self, config, model):
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        tmp = f"{target}.{os.getpid()}.tmp"
        try:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=tmp, **kwargs)
            if os.path.exists(tmp):  # RecBole skips the save on non-zero DDP ranks
                os.replace(tmp, target)
                if verbose:
                    self.logger.info(set_color("Saving current", "blue") + f": {target}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class DeviceLossMixin:
    """RecBole's training epoch without a host sync per step (for ``Trainer`` subclasses using its plain loop).

    RecBole's ``Trainer._train_epoch`` reads every step's loss back to the host (``loss.item()`` and a NaN check),
    so on a GPU the host waits for each step to finish before it queues the next. Here the epoch's loss sum (float64)
    and the first step with a NaN loss are kept on the device and read once, when the epoch ends; a NaN loss then
    raises RecBole's ``ValueError`` naming that step. The steps themselves are RecBole's (zero_grad, autocast with
    ``enable_amp``, GradScaler with ``enable_scaler``, ``clip_grad_norm``), so parameters and returned sums are
    the same. Under RecBole's own DDP launcher (``single_spec`` false) RecBole's loop runs unchanged.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if not self.config["single_spec"]:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        batches = train_data
        if show_progress:
            desc = set_color(f"Train {epoch_idx:>5}", "pink")
            batches = tqdm(train_data, total=len(train_data), ncols=100, desc=desc)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.enable_scaler)
        total, first_nan = None, torch.full((), -1, dtype=torch.long, device=self.device)
        for step, interaction in enumerate(batches):
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad()
            with torch.autocast(device_type=self.device.type, enabled=self.enable_amp):
                losses = loss_func(interaction)
            parts = losses if isinstance(losses, tuple) else (losses,)
            loss = sum(parts) if isinstance(losses, tuple) else losses
            # one value per part, as RecBole's .item() reads it: any one-element shape (graph models and Pop: (1,))
            values = torch.stack([part.detach().double().reshape(()) for part in parts])
            total = values if total is None else total + values
            first_nan = torch.where((first_nan < 0) & torch.isnan(loss.detach().reshape(())), step, first_nan)
            scaler.scale(loss).backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            scaler.step(self.optimizer)
            scaler.update()
            if self.gpu_available and show_progress:
                batches.set_postfix_str(set_color("GPU RAM: " + get_gpu_usage(self.device), "yellow"))
        if total is None:
            return None
        if int(first_nan) >= 0:
            raise ValueError(f"Training loss is nan (epoch {epoch_idx}, first at step {int(first_nan)})")
        sums = total.tolist()
        return tuple(sums) if isinstance(losses, tuple) else sums[0]


class CandidateItemsMixin:
    """``eval_candidates: <suffix>``: full-ranking evaluation ranks only the items listed in the dataset's
    ``<dataset>.<suffix>`` file (one item token per line, e.g. ml-100k_mm_cold's held-out items) that occur in the
    dataset's files (the count is logged); every other item scores ``-inf``. Unset (the default): every item is a
    candidate, as in RecBole."""

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self.candidate_dataset = eval_data._dataset if eval_data else None
        self.candidate_mask = candidate_mask(self.config, self.candidate_dataset) if eval_data else None
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        mask = getattr(self, "candidate_mask", None)
        if mask is not None:
            scores = scores.masked_fill(~mask.to(scores.device), -torch.inf)
        return interaction, scores, positive_u, positive_i


def candidate_mask(config, dataset) -> Optional[torch.Tensor]:
    """``[n_items]`` bool of the ``eval_candidates`` items that occur in ``dataset`` (None when unset)."""
    suffix = config["eval_candidates"]
    if not suffix:
        return None
    path = os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")
    if not os.path.isfile(path):
        raise ConfigError(f"eval_candidates {suffix!r}: no file {path}")
    with open(path, encoding="utf-8") as f:
        tokens = [line.strip() for line in f if line.strip()]
    known = dataset.field2token_id[dataset.iid_field]
    present = [known[t] for t in tokens if t in known]
    if not present:
        raise ConfigError(f"{path}: none of its {len(tokens)} item tokens occurs in the dataset {config['dataset']!r}")
    dataset.logger.info(
        f"eval_candidates {suffix!r}: {len(present)} of the {len(tokens)} listed items occur in the dataset's files "
        f"and are ranked; the others cannot be scored"
    )
    mask = torch.zeros(dataset.item_num, dtype=torch.bool)
    mask[torch.as_tensor(present)] = True
    return mask


def for_recbole_mm(trainer_class):
    """A RecBole trainer as recbole_mm runs it: :class:`AtomicCheckpointMixin` in front, and
    :class:`DeviceLossMixin` too where the class trains with RecBole's own epoch loop unchanged (a trainer that
    overrides ``_train_epoch`` keeps its own). Classes outside RecBole's ``Trainer`` family are returned unchanged."""
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, AtomicCheckpointMixin):
        return trainer_class
    mixins = (CandidateItemsMixin, AtomicCheckpointMixin)
    if trainer_class._train_epoch is Trainer._train_epoch:
        mixins += (DeviceLossMixin,)
    return type(trainer_class.__name__, mixins + (trainer_class,), {"__module__": __name__})


class PretrainTrainer(CandidateItemsMixin, AtomicCheckpointMixin, DeviceLossMixin, Trainer):
    r"""RecBole's trainer plus a pre-training stage, a per-epoch model hook and multi-process rank sharding, without
    a host sync per step (:class:`DeviceLossMixin`). :func:`recbole_mm.registry.get_trainer` gives it to every model
    of the multi-modal sequential family (the family base declares it as its ``trainer_class``).

    * Before every training epoch (epoch 0 included) it calls ``model.on_epoch_start(epoch)`` where the model has
      one (MISSRec re-clusters its interests there; state the hook keeps in buffers is saved with checkpoints).
    * ``train_stage: pretrain``: :meth:`fit` trains ``pretrain_epochs`` epochs without validation and saves
      ``<Model>-<dataset>-<epoch>[-<ckpt_suffix>].pth`` every ``save_step`` epochs (epochs counted from 1). The
      three keys are read from the model's YAML (``properties/model/<Model>.yaml``), as RecBole reads its model
      keys per model, so each model of the family declares its own defaults there.
    * Multi-process training started outside RecBole (torch.distributed initialised before, e.g. by torchrun,
      ``single_spec`` true): every rank draws the same global batch (the dataloaders share the seed) and
      trains on its contiguous shard, gradients are averaged over the ranks after every backward, so all
      ranks take the same step; only rank 0 writes checkpoints. The model scales its loss terms with
      :class:`~recbole_mm.model.distributed.RankShare`. (Under RecBole's own ``nproc`` launcher, NCCL only,
      RecBole's DDP machinery applies.)
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.world_size = 1
        if config["single_spec"] and int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
            self._join_launcher_group()
        if config["single_spec"] and dist.is_available() and dist.is_initialized():
            self.world_size = dist.get_world_size()
            for param in self.model.parameters():
                if param.requires_grad:
                    param.register_post_accumulate_grad_hook(self._average_gradient)

    def _join_launcher_group(self):
        """Started by torchrun (WORLD_SIZE, RANK, LOCAL_RANK set): join its group, one GPU per process."""
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device)
            self.model.to(self.device)
        dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def _average_gradient(self, param):
        dist.all_reduce(param.grad)
        param.grad /= self.world_size

    def _is_writer(self):
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if hasattr(self.model, "on_epoch_start"):
            self.model.on_epoch_start(epoch_idx)
        loss_func = loss_func or self.model.calculate_loss
        if self.world_size > 1:  # every rank draws the same global batch (same seed) and trains on its shard
            rank, full_loss = dist.get_rank(), loss_func

            def loss_func(interaction):
                device = next(iter(interaction.interaction.values())).device
                shard = torch.tensor_split(torch.arange(len(interaction)), self.world_size)[rank]
                return full_loss(interaction[shard.to(device)])

        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if self._is_writer():
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)

    def _pretrain_setting(self, key, minimum):
        value = self.config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{self.config['model']}: config key '{key}' must be an int >= {minimum} for train_stage 'pretrain' "
                f"(declare it in properties/model/{self.config['model']}.yaml), found {value!r}"
            )
        return value

    def pretrained_model_file(self, epoch_idx):
        """Checkpoint path of pre-training epoch ``epoch_idx`` (0-based): ``<Model>-<dataset>-<epoch_idx + 1>``
        and ``-<ckpt_suffix>`` where set, ``.pth``."""
        suffix = f"-{self.config['ckpt_suffix']}" if self.config["ckpt_suffix"] else ""
        name = f"{self.config['model']}-{self.config['dataset']}-{epoch_idx + 1}{suffix}.pth"
        return os.path.join(self.checkpoint_dir, name)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.config["train_stage"] != "pretrain":
            return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        epochs, save_step = self._pretrain_setting("pretrain_epochs", 0), self._pretrain_setting("save_step", 1)
        for epoch_idx in range(self.start_epoch, epochs):
            start = time()
            train_loss = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            self.train_loss_dict[epoch_idx] = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch_idx, start, time(), train_loss))
            if saved and (epoch_idx + 1) % save_step == 0:
                self.saved_model_file = self.pretrained_model_file(epoch_idx)
                self._save_checkpoint(epoch_idx, verbose=verbose)
        return self.best_valid_score, {}

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data is None:  # pre-training has no validation or test split
            self.logger.info(set_color("no evaluation data", "yellow"))
            return {}
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)


class MMSSLTrainer(CandidateItemsMixin, AtomicCheckpointMixin, Trainer):
    r"""MMSSL's training loop: per batch, one step of the critic (its own Adam) then one step of the recommender.

    * The recommender's optimiser (RecBole's ``learner``, ``learning_rate``, ``weight_decay``) holds every parameter
      except the critic's; the critic's Adam (``D_lr``, betas (0.5, 0.9)) holds only the critic's.
    * ``reference_compat: false``: RecBole's training batches; after each epoch's batches the generated modality
      graphs are regenerated for every user (:meth:`MMSSL.regenerate_graphs`), so validation and the checkpoint
      use them. ``true``: the reference's batches (:meth:`MMSSL.reference_batches`, seeded by ``seed``) and its
      per-batch graph schedule (:meth:`MMSSL.after_batch`).
    * A non-finite gradient penalty or recommender loss stops training with an error naming the epoch and step,
      before anything is saved (the best checkpoint on disk stays as it was).
    * The epoch's loss is the tuple ``(bpr, emb_reg, feat_reg, cl, adversarial, critic)`` of sums over its batches.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.critic_optimizer = torch.optim.Adam(model.critic.parameters(), lr=config["D_lr"], betas=(0.5, 0.9))
        self.batch_generator = torch.Generator().manual_seed(int(config["seed"]))

    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("params", self.model.recommender_parameters())
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        from recbole_mm.model.general_recommender.mmssl import MMSSLTrainingError

        model = self.model
        model.train()
        model.skipped_critic_batches = 0
        batches = model.reference_batches(self.batch_generator) if model.compat else train_data
        if show_progress:
            batches = tqdm(batches, ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
        totals = None
        for step, interaction in enumerate(batches):
            interaction = interaction.to(self.device)
            critic = model.critic_loss(interaction)
            critic_value = 0.0
            if critic is not None:
                critic_loss, penalty = critic
                if not torch.isfinite(penalty):
                    raise MMSSLTrainingError(
                        f"the critic's gradient penalty is {float(penalty)} at epoch {epoch_idx}, step {step}; "
                        f"training stopped, the best checkpoint was not overwritten (lower D_lr or gp_rate)"
                    )
                self.critic_optimizer.zero_grad()
                critic_loss.backward()
                self.critic_optimizer.step()
                critic_value = float(critic_loss.detach())
            self.optimizer.zero_grad()
            parts = model.calculate_loss(interaction)
            loss = sum(parts)
            if not torch.isfinite(loss):
                raise MMSSLTrainingError(
                    f"the recommender's loss is {float(loss)} at epoch {epoch_idx}, step {step}; training stopped, "
                    f"the best checkpoint was not overwritten"
                )
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(model.recommender_parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            model.after_batch(step)
            values = [float(p.detach()) for p in parts] + [critic_value]
            totals = values if totals is None else [a + b for a, b in zip(totals, values)]
        model.regenerate_graphs()
        if model.skipped_critic_batches:
            self.logger.info(
                f"epoch {epoch_idx}: {model.skipped_critic_batches} batch(es) with fewer than 2 distinct users "
                f"skipped the critic step and the adversarial term"
            )
        return None if totals is None else tuple(totals)


def pessimistic_ranks(scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor) -> torch.Tensor:
    r"""Replace ranking scores ``[U, N]`` by ``-rank``, where among equal scores the positives rank after the
    negatives (a positive tied with a negative does not win); ``-inf`` entries (not candidates) stay ``-inf``."""
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[positive_u, positive_i] = True
    order = torch.argsort(positive.to(torch.int8), dim=1, stable=True)  # negatives first
    order = order.gather(1, torch.argsort(scores.gather(1, order), dim=1, descending=True, stable=True))
    position = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, position)
    return torch.where(torch.isneginf(scores), scores, -ranks.to(scores.dtype))


class LongSequenceTrainer(CandidateItemsMixin, AtomicCheckpointMixin, DeviceLossMixin, Trainer):
    r"""RecBole's trainer for the long-sequence family (SIM, ETA, QIN, TWIN, SEMINAR), with ties in ranking
    evaluation (sampled and full) broken pessimistically (:func:`pessimistic_ranks`)."""

    def _neg_sample_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._neg_sample_batch_eval(batched_data)
        if scores.dim() == 2:  # ranking evaluation
            scores = pessimistic_ranks(scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        return interaction, pessimistic_ranks(scores, positive_u, positive_i), positive_u, positive_i

