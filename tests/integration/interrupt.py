"""Interrupting a training run from inside, as Ctrl-C would (shared by the resume tests)."""


class StopAt:
    """A reporter that interrupts the run after a given step, like a Ctrl-C would."""

    def __init__(self, step):
        self.stop = step

    def start(self, total, first): pass

    def step(self, step, metrics):
        if step >= self.stop:
            raise KeyboardInterrupt

    def evaluated(self, step, metrics): pass

    def close(self): pass
