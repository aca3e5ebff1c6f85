"""DDP ranks forked from the test process, where coz spawns them, with spawn's one extra step checked.

On one node coz starts DDP ranks with ``spawn`` (coz.run.trainer). A spawned rank is a fresh interpreter
that pays ~11 CPU-s importing Lightning again; a forked one starts from the test process as it is. Both
go through the same Lightning launcher (the same wrapping function, results handed back to the main
process the same way). What spawning adds is pickling the launcher's function and arguments (the
trainer, with the module, data and callbacks) for the new interpreters: :func:`fork_the_ranks` pickles
and unpickles them in this process, then forks. Not checked: what a fresh interpreter would lack that
this one set up (a module imported here only, a resolver registered here only).
"""

from __future__ import annotations


def fork_the_ranks(monkeypatch) -> list[int]:
    """Make coz's DDP ranks forked for this test, after asserting coz chose spawn and that what spawn
    sends each rank survives a pickle round trip. Returns a list that gets the pickled size of each
    launch's arguments (one entry per launch)."""
    import pickle

    import torch.multiprocessing as mp

    from coz.run import trainer as coz_trainer

    chosen = coz_trainer.strategy
    pickled: list[int] = []

    def forked(name, devices, num_nodes):
        picked = chosen(name, devices, num_nodes)
        assert picked._start_method == "spawn", picked  # coz's rule for several devices on one node
        picked._start_method = "fork"
        return picked

    def start_processes(
        fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn", _real=mp.start_processes
    ):
        assert start_method == "fork"
        # what each spawned rank would be sent, but the return queue (picklable only while spawning). A
        # plain pickle: spawn's own pickler would move every weight into shared memory, which the
        # forked ranks would then update together.
        sent = pickle.dumps((fn, list(args[:4])))
        pickle.loads(sent)
        pickled.append(len(sent))
        return _real(fn, args, nprocs, join, daemon, start_method)

    monkeypatch.setattr(coz_trainer, "strategy", forked)
    monkeypatch.setattr(mp, "start_processes", start_processes)
    return pickled
