"""The model lifecycle as a typed state machine, safe under at-least-once delivery.

Module map:
- records: the stored records (ModelVersion, Aliases, RunRecord, ClaimRecord), their status
  vocabularies and the transition functions `(record, event) -> record` that refuse illegal moves;
  old JSON shapes are migrated on read.
- claims: one unit of stage work per key, owned under a renewable lease (heartbeat); an expired
  lease is taken over, a completed claim answers duplicates.
- stages: the one wrapper every queue stage runs in (claim -> work -> complete; defer duplicates;
  reject deterministic failures at once; retry only transient ones).
- sweeper: finds expired leases and unsynced alias flips and finishes what a crash left behind.
- releases: approve, reject, rollback (idempotent) and giving up on poisoned work.
"""
