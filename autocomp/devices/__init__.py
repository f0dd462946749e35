"""Device cost tables: the table schema and the lookup that prices an op (``costs``), the host
and Android runners that time ops (``profiling``, ``plan_timing``), the published phone
measurements and the tables calibrated on them (``published``, ``calibrate``, ``fidelity``); the
shipped JSON tables lie beside these modules."""
