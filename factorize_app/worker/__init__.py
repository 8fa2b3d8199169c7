"""The model worker: loads each listened-to task type's model once, then runs jobs in batches.

RQ's default `Worker` forks a child per job, which would throw a warm model (and any CUDA
context) away after every job; `SimpleWorker` keeps everything in one process. RQ also pays
about twenty Redis round trips per job; this worker takes a batch of jobs in one round trip,
runs them, and records them in a few transactions, on RQ's own job hashes, registries and
result streams, so the dashboard and `rq info` see every job as usual.

A batch never holds a result back: results are recorded in groups by time (RESULT_FLUSH_SECONDS
after the first unrecorded one), not when the batch ends, and jobs taken but not yet started go
back to the queue, for other workers, once the job running ahead of them has run long
(hand_back_after). The size of the next batch follows the median cost of a type's recent jobs.

Redis outages and write refusals (a full Redis, a read-only replica, failed persistence) are
ridden out alike: a worker waits with backoff, keeps the results it computed until they are
recorded, registers once Redis takes writes, and logs one line when the trouble starts and one
when it ends, not one per retry. Its maintenance also unregisters workers that stopped
heartbeating and recovers queued jobs lost in an outage (jobs.sweep_queue).

One module per concern:

- `base`: `ServiceWorker`, the RQ worker both the model worker and the webhooks worker build on;
- `loop`: `WarmWorker`, RQ's loop taking batches (RQ["WORKER_CLASS"] names it here);
- `startup`: loading the models before registering;
- `costs`: what a type's jobs cost, and so how many to take at once;
- `execution`: running a taken batch's handler calls;
- `batch`: the batch's jobs as a state machine (`InBatch`), shared with the lease keeper;
- `lease`: the lease keeper thread;
- `progress`: handlers' progress reports, written by the lease keeper;
- `interruption`: stopping a running job (signals, stop requests, RQ's stop commands);
- `outage`: riding out Redis outages and write refusals.
"""

from factorize_app.worker.costs import CostEstimates
from factorize_app.worker.loop import WarmWorker

__all__ = ["CostEstimates", "WarmWorker"]
