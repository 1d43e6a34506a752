"""Early stopping: stop after `patience` epochs without a better validation fitness."""

from __future__ import annotations


class EarlyStopper:
    def __init__(self, patience: int, best_fitness: float | None = None, best_epoch: int = -1):
        self.patience = patience
        self.best_fitness = best_fitness
        self.best_epoch = best_epoch

    def update(self, epoch: int, fitness: float) -> bool:
        """Record this epoch; return True when `fitness` is a new best."""
        if self.best_fitness is None or fitness > self.best_fitness:
            self.best_fitness, self.best_epoch = fitness, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience

    def state(self) -> dict:
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch}
