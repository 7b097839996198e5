"""Python 3.10/3.11 compatibility shim for matrix-synapse 1.3.1 and its pinned dependencies.

Loaded at interpreter start by a one-line ``.pth`` file in the test venv's site-packages
(``scripts/install-test-deps`` installs both). Synapse itself stays unpatched; this only puts
back two things that newer Pythons removed:

- ``collections.Mapping``, ``MutableMapping``, ``Sequence``, ... as aliases of the
  ``collections.abc`` classes (frozendict 1.2 subclasses ``collections.Mapping``);
- ``inspect.getargspec``, returning ``ArgSpec(args, varargs, keywords, defaults)`` built from
  ``inspect.getfullargspec`` (Synapse's ``@cached`` decorator calls it).
"""

import collections
import collections.abc
import inspect

for _name in collections.abc.__all__:
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

if not hasattr(inspect, "getargspec"):
    ArgSpec = collections.namedtuple("ArgSpec", ["args", "varargs", "keywords", "defaults"])

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.ArgSpec = ArgSpec
    inspect.getargspec = getargspec
