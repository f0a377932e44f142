"""Training with Ignite, by phase: ``data`` (in-memory splits and loaders), ``augment``, ``step`` (the training
step, replayed from a CUDA graph on a GPU), ``optim``, ``engines`` (trainer and evaluators), ``handlers``
(``attach_*``), ``wiring`` (``HANDLERS``, the ordered table ``attach_handlers`` walks), ``state`` (history,
best-weights selection, checkpoint adapters), ``resume``, ``rundir`` (the run directory's lock), ``job`` (one
training job: built in phases, ``Training``, ``train``), ``devices``, ``distributed``, ``seeds`` and
``notebook_baseline``."""
