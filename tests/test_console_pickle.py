"""Tune pickles the sweep's callback, and with it the console's ``echo``. Once the
driver has shown a worker's log line, Ray has replaced ``builtins.print`` (its
tqdm-safe print): a callback holding the original ``print`` then fails to pickle
(a flaky ``PicklingError`` at ``tune.Tuner``). The default echo must survive that."""

import builtins

from ray import cloudpickle

from agd_ray.ray_setup import say
from agd_ray.sweep.console import SweepProgress


def test_the_default_echo_pickles_after_ray_replaces_print(monkeypatch, capsys):
    progress = SweepProgress([], [])
    original = builtins.print
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: original("patched", *args))
    restored = cloudpickle.loads(cloudpickle.dumps(progress))
    assert restored.echo is say
    restored.echo("a line")  # print as it is now, looked up at the call
    assert capsys.readouterr().out == "patched a line\n"
