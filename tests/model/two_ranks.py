"""The two-rank harness of the multi-modal sequential family's rank-sharing tests: train the same runs on two gloo
ranks and in one process, and compare the final parameters."""

import torch
from recbole.utils import init_seed

from recbole_mm.data.utils import create_dataset, data_preparation
from recbole_mm.registry import get_model, get_trainer


def train_runs(rank: int, world: int, directory, runs) -> None:
    """Train each ``(tag, make)`` of ``runs`` once, ``make(directory)`` giving its Config (a module-level function or
    a ``functools.partial`` of one, so that spawned ranks can unpickle it), over gloo when ``world > 1``; save the
    final state_dict per rank as ``<tag>-state-<rank>-of-<world>.pt``. One process pair serves every run (their
    start-up is most of the time)."""
    if world > 1:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{directory / 'rendezvous'}", rank=rank, world_size=world
        )
    torch.set_num_threads(1)
    for tag, make in runs:
        config = make(directory)
        init_seed(config["seed"], config["reproducibility"])
        train_data, valid_data, _ = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data.dataset)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer.fit(train_data, valid_data, verbose=False, saved=True)
        torch.save(model.state_dict(), directory / f"{tag}-state-{rank}-of-{world}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def two_ranks_and_one(directory, runs, tolerance: float = 1e-5) -> dict:
    """Train ``runs`` on two ranks, then in one process; assert that the two ranks end equal (they share every step)
    and within ``tolerance`` of the single process (= the global batch). Returns ``tag -> single-process state``."""
    torch.multiprocessing.spawn(train_runs, args=(2, directory, runs), nprocs=2)
    train_runs(0, 1, directory, runs)
    singles = {}
    for tag, _ in runs:
        paths = [directory / f"{tag}-state-{r}-of-{w}.pt" for r, w in ((0, 2), (1, 2), (0, 1))]
        rank0, rank1, single = (torch.load(path) for path in paths)
        for key in single:
            assert torch.equal(rank0[key], rank1[key]), (tag, key)  # the ranks really share every step
            difference = (rank0[key].double() - single[key].double()).abs().max()
            assert difference <= tolerance, (tag, key, float(difference))  # = the global batch
        singles[tag] = single
    return singles
