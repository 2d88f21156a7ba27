"""The whole filter stage (the default steps) over N synthetic dialogues, locally and on Ray, on this
machine: what `datagen run` does with the local executor and with `--executor ray`.

    .venv/bin/python bench/ray_filters.py                  # 100k dialogues
    .venv/bin/python bench/ray_filters.py --rows 20000     # quicker

The dialogues are written to a JSONL file first (two turns in one language each: bench/dedup.py's
zh/en prompts with about 10% near-duplicate variants, 3% exact copies; a few answers with
boilerplate, a phone number, French, nothing), then `run_filters` reads that file both ways. Local: the worker processes
of `workers` (all CPUs) for the per-row work, the dedup indexes in this process. Ray: a local Ray
with all CPUs (its start and stop are not timed, a cluster being up before a run), the per-row work
on `RayChunkMapper` actors and the dedup steps on `RayDedup`, which is what the Ray executor hands
the filter stage. `same` compares kept.jsonl and rejected.jsonl byte for byte and the funnel
(everything but per-step seconds).

Prints `rows=N filter_local_s=A filter_ray_s=B same=true`, then the driver's CPU time on Ray
(`ray_driver_cpu_s`, `ray_driver_ms_per_row`: reading, deciding in input order, writing; what
stays serial however many CPUs the cluster has).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dedup import prompts  # noqa: E402
from datagen.filters.config import FilterConfig  # noqa: E402
from datagen.filters.run import run_filters  # noqa: E402
from datagen.io import iter_conversations  # noqa: E402
from datagen.record import Conversation, Turn  # noqa: E402

ZH = re.compile(r"[\u4e00-\u9fff]")
#: (answer, weight) per language: most are fine, a few are tagged, redacted, dropped
ANSWERS = {
    "en": (
        ("Sure. Here is a short answer that covers the main points and ends with a short summary.", 80),
        ("As an AI language model, I cannot browse, but here is what I know about the topic.", 6),
        ("Sure: John Smith, phone 13912345678, email john.smith@example.com.", 3),
        ("Je vais très bien, merci beaucoup de demander ! C'est une belle journée aujourd'hui.", 3),
        ("", 3),
    ),
    "zh": (
        ("当然可以。下面是一个简短的回答，包括主要的步骤、需要注意的地方和一个小结。", 80),
        ("作为一个人工智能语言模型，我无法上网，但我可以根据已有的知识回答这个问题。", 6),
        ("好的：张三，电话13912345678，邮箱 zhangsan@163.com。", 3),
        ("", 3),
    ),
}
FOLLOW_UP = {"en": "Thanks. Can you sum that up in one sentence?", "zh": "谢谢，能用一句话总结一下吗？"}


def write_dialogues(path: Path, n: int, seed: int) -> None:
    """n two-turn dialogues in one language each, about 3% exact copies of an earlier one."""
    rng = random.Random(seed)
    made: list[Conversation] = []
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(prompts(n, seed, dup_rate=0.1, scale=4)):
            if made and rng.random() < 0.03:
                conv = Conversation.from_dict({**rng.choice(made).to_dict(), "id": f"d{i:08d}"})
            else:
                lang = "zh" if ZH.search(text) else "en"
                answers, weights = zip(*ANSWERS[lang], strict=True)
                a, b = rng.choices(answers, weights, k=2)
                turns = [Turn(human=text, assistant=a), Turn(human=FOLLOW_UP[lang], assistant=b)]
                conv = Conversation(id=f"d{i:08d}", turns=turns)
                if len(made) < 2000:
                    made.append(conv)
            fh.write(json.dumps(conv.to_dict(), ensure_ascii=False) + "\n")


def outputs(out: Path) -> dict:
    funnel = json.loads((out / "funnel.json").read_text(encoding="utf-8"))
    for s in funnel["steps"]:
        s.pop("seconds", None)
    return {
        "kept": (out / "kept.jsonl").read_bytes(),
        "rejected": (out / "rejected.jsonl").read_bytes(),
        "funnel": funnel,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    config = FilterConfig.default()
    with tempfile.TemporaryDirectory(prefix="ray-filters-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "dialogues.jsonl"
        write_dialogues(data, args.rows, args.seed)

        t0 = time.perf_counter()
        local = run_filters(iter_conversations(data), config, tmp_path / "local", workers=args.cpus)
        local_s = time.perf_counter() - t0

        import ray

        from datagen.run.executors.ray_chunks import RayChunkMapper
        from datagen.text.neardup_ray import RayDedup

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            say = lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)  # noqa: E731
            t0, cpu0 = time.perf_counter(), time.process_time()
            on_ray = run_filters(
                iter_conversations(data),
                config,
                tmp_path / "ray",
                dedup=RayDedup(log=say),
                mapper=RayChunkMapper(log=say),
            )
            ray_s, driver_s = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            ray.shutdown()
        same = outputs(tmp_path / "local") == outputs(tmp_path / "ray")
        print(
            f"# kept {local.kept} of {local.input}; ray kept {on_ray.kept}; "
            + ", ".join(f"{s.name} -{s.dropped}" for s in local.steps),
            file=sys.stderr,
        )
    print(f"rows={args.rows} filter_local_s={local_s:.1f} filter_ray_s={ray_s:.1f} same={str(same).lower()}")
    # what stays serial on Ray: reading, deciding in order, writing (the ceiling on a large cluster)
    print(f"ray_driver_cpu_s={driver_s:.1f} ray_driver_ms_per_row={1000 * driver_s / args.rows:.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
