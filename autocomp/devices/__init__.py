"""Device cost tables: this machine's identity (``host``), op keys and exact counts
(``opkeys``), the analytic model and a table's int8 view (``analytic``), the table schema and
loading (``tables``), the lookup that prices an op (``costs``); the host and Android runners
that time ops (``profiling``, ``runtimes``, ``plan_timing``) and the profiler that measures a
table with them (``profiler``, behind ``python -m autocomp.profile``); the published phone
measurements and the tables calibrated on them (``published``, ``calibrate``, ``fidelity``).
Imports run one way: host <- opkeys <- analytic <- tables <- costs. The shipped JSON tables
lie beside these modules."""
