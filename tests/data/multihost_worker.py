"""One process of a 2-process CPU job (jax.distributed over gloo): build, merge, read.

    python -m tests.data.multihost_worker PORT PROCESS_ID RAW_ROOT DATA_DIR
Prints one JSON line: the corpus folder and this process's first local batch rows.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402


def main(port, pid, raw, data_dir):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=int(pid), initialization_timeout=60)
    from svcjax.data import corpus, input_pipeline
    from svcjax.runtime.sharding import make_mesh
    from tests.data import fakes
    from tests.data.conftest import BUILD
    out = corpus.build_corpus(raw, data_dir, fakes.featurizer(), BUILD, log=lambda m: None)
    cfg = input_pipeline.default_config("generator")
    cfg.update(dict(data_dir=data_dir, batch_size=4, crop_frames=32, shuffle=False,
                    crop="start"))
    batch = next(input_pipeline.GlobalBatches(input_pipeline.make_loader(cfg), make_mesh()))
    local = [s.data.tolist() for s in batch["f0"].addressable_shards]
    print(json.dumps(dict(out=str(out), shape=list(batch["f0"].shape), local=local)),
          flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
