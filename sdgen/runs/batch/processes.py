"""This process's place in an accelerate launch (`accelerate launch ... sdgen batch`, one machine or several):
its rank, its share of the chunks, the folder lock and waiting for the others; a peer gone is one line."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import GenerationError, InvalidRequestError
from sdgen.runs.batch.manifest import FolderLock
from sdgen.runs.batch.plan import PlannedImage


@dataclass
class Processes:
    """This process's place in an accelerate launch (rank 0 of 1 when run on its own)."""

    rank: int = 0
    world: int = 1
    device: str | None = None
    state: Any = None

    @classmethod
    def detect(cls) -> Processes:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()  # not launched by accelerate/torchrun: no torch.distributed needed
        import torch
        from accelerate import PartialState

        # Without CUDA, accelerate only sets up its gloo (MULTI_CPU) group when asked for the CPU.
        state = together("started", lambda: PartialState(cpu=not torch.cuda.is_available()))
        return cls(state.process_index, state.num_processes, str(state.device), state)

    def my_share(self, work: list[list[PlannedImage]]) -> list[list[PlannedImage]]:
        if self.state is None:
            return work
        with self.state.split_between_processes(work) as mine:
            return list(mine)

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            together("finished its share", self.state.wait_for_everyone)

    def lock(self, folder: Path) -> FolderLock | None:
        """The main process locks the folder for the whole launch; every process learns whether it could."""
        lock, problem = None, None
        if self.rank == 0:
            lock = FolderLock(folder)
            try:
                lock.acquire()
            except InvalidRequestError as error:
                lock, problem = None, str(error)
        if self.state is not None:
            from accelerate.utils import broadcast_object_list

            problem = together("started", lambda: broadcast_object_list([problem])[0])
        if problem is not None:
            raise InvalidRequestError(problem)
        return lock


def together(doing: str, work: Callable[[], Any]) -> Any:
    """Work with the launch's other processes; a peer gone (killed, its machine down: torch.distributed's
    RuntimeErrors, gloo's "Connection closed by peer") is a one-line GenerationError, not a traceback."""
    try:
        return work()
    except RuntimeError as error:
        text = re.sub(r"\[/[^\]]*\]\s*", "", " ".join(str(error).split()))  # gloo's [/path/pair.cc:553]
        reason = text.split(". ")[0][:200]
        raise GenerationError(f"another process of this launch stopped as this one {doing} ({reason or error}); "
                              "the images and records made are kept: run the same launch again to make the "
                              "rest.") from None
