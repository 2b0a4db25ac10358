"""The logit lens beside learned lenses for one prompt, as a picture (docs/lenses.md).

    python examples/lens_side_by_side.py MODEL_DIR LENS_DIR [LENS_DIR ...] -o lenses.png \
        [-p "The Eiffel Tower is located in the city of"]

One forward of the model's own code (``lens/taps.py``), every residual stream at the last
position read through the model's head under each lens (``LensReader``), drawn by
``plots/lens_pair.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lazarus_mcp.runtime.process import prepare_process

prepare_process()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from lazarus_mcp.lens.taps import tapped_forward  # noqa: E402
from lazarus_mcp.lenses.readout import LensReader, open_lens  # noqa: E402
from lazarus_mcp.modeling.loading import load  # noqa: E402
from lazarus_mcp.modeling.options import LoadOptions  # noqa: E402
from lazarus_mcp.plots.lens_pair import LensColumn, lens_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("lenses", nargs="+")
    parser.add_argument("-p", "--prompt", default="The Eiffel Tower is located in the city of")
    parser.add_argument("-o", "--output", default="lenses.png")
    args = parser.parse_args()
    loaded = load(args.model, LoadOptions(dtype="float32"))
    n = loaded.info.num_layers
    ids = loaded.tokenizer.encode(args.prompt)
    last = len(ids) - 1
    tapped = tapped_forward(
        loaded.model, mx.array([ids]), mx.array([[[last]]]), outputs=range(n), inputs=(0,)
    )
    streams: list[tuple[int | None, mx.array]] = [(None, tapped.inputs[0][0, 0])]
    streams += [(i, tapped.outputs[i][0, 0]) for i in range(n)]
    final = tapped.logits[0, 0].astype(mx.float32)
    final_lp = final - mx.logsumexp(final)
    target = int(mx.argmax(final))
    readers = [("logit lens", LensReader(loaded.head))]
    for path in args.lenses:
        lens = open_lens(path, loaded)
        readers.append((f"{lens.kind} lens", LensReader(loaded.head, lens)))
    columns = []
    for title, reader in readers:
        tokens, probs, kls = [], [], []
        for layer, hidden in streams:
            logits = final if layer == n - 1 else reader.readout(hidden, layer)
            lp = logits - mx.logsumexp(logits)
            kl = mx.sum(mx.exp(final_lp) * (final_lp - lp))
            tokens.append(loaded.token_text(int(mx.argmax(lp))))
            probs.append(float(mx.exp(lp[target])))
            kls.append(float(kl))
        fit = reader.describe()["fit"]
        if isinstance(fit, dict):
            title += (
                f"\nheld-out mean KL {fit['mean_kl_lens']:.2f} (logit {fit['mean_kl_logit']:.2f})"
            )
        columns.append(LensColumn(title, tokens, probs, kls))
        print(
            title.replace("\n", " | "), "mean KL blocks 0..N-2:", round(float(np.mean(kls[1:n])), 3)
        )
    rows = ["emb"] + [str(i) for i in range(n)]
    target_text = loaded.token_text(target)
    Path(args.output).write_bytes(
        lens_pair(rows, columns, target_text, Path(args.output).suffix[1:])
    )
    print("wrote", args.output)


if __name__ == "__main__":
    main()
