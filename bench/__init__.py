"""mailwright's benchmark suite: the server measured side by side with Postfix, aiosmtpd and smtp-sink.

Run it with `bash bench/run` (it installs the peers first) or `python3 -m bench.suite`.  Every
benchmark talks only to loopback servers that the suite starts itself, is bounded in message count
and in time (every subprocess has a timeout), and stops every process it started.

Modules: `suite` (command line, orchestration), `targets` (starting and stopping each server under
test), `postfix_instance` (a private Postfix instance with its own queue), `aiosmtpd_peer` (the
aiosmtpd server process), `smtp_client` and `probe` (the latency probe), `acceptance`
(smtp-source runs), `idle` (many idle connections), `large` (one 50 MB message), `report`
(table, JSON, README section).

Not responsible for: tuning any server; the figures are what each one does as configured here.
"""
