"""The contract of engine/cuda_kernels.cu written out in numpy (float64), for machines
without a CUDA GPU: what each kernel reads from its inputs (the packed weights through
the offset table, the stacked caches, the row and column bookkeeping) and what it
writes. engine.cuda_frame.CudaFrames takes it as its kernel factory, so the packing,
the caches and the generation loop around the kernels are tested here; the kernels
themselves are checked against MLX on the GPU (engine.cuda_frame.check_against_mlx).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from engine.config import VibeVoiceConfig
from engine.cuda_frame import LAYER_ITEMS, LMAX, KernelSpec, item_indices


class Emulator:
    """One kernel (a ``KernelSpec``) as a callable with ``mx.fast.cuda_kernel``'s call."""

    def __init__(self, cfg: VibeVoiceConfig, spec: KernelSpec, rope_sign: float = 1.0) -> None:
        self.cfg, self.spec, self.rope_sign = cfg, spec, rope_sign
        dec, head = cfg.decoder, cfg.diffusion
        self.H, self.NH, self.KVH, self.HD = (
            dec.hidden_size, dec.num_attention_heads, dec.kv_heads, dec.dim_per_head,
        )  # fmt: skip
        self.I, self.HF, self.LAT = dec.intermediate_size, head.ffn_dim, cfg.acoustic_vae_dim
        self.NHL, self.NMOD = head.head_layers, 3 * head.head_layers + 2
        self.O = item_indices(cfg)

    # -- weights --
    def w(self, i: int, n: int, k: int) -> np.ndarray:
        o = int(self.offs[i])
        bits = self.wh[o : o + n * k].astype(np.uint32) << 16
        return bits.view(np.float32).reshape(n, k).astype(np.float64)

    def v(self, i: int, n: int) -> np.ndarray:
        o = int(self.offs[i])
        return self.wf[o : o + n].astype(np.float64)

    # -- math --
    @staticmethod
    def rms(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
        return y if w is None else y * w

    @staticmethod
    def silu(x: np.ndarray) -> np.ndarray:
        return x / (1.0 + np.exp(-x))

    def rope(self, x: np.ndarray, pos: int) -> np.ndarray:
        half = self.HD // 2
        d = np.arange(half)
        inv = 2.0 ** (-(d / half) * np.log2(self.cfg.decoder.rope_theta))
        th = pos * inv
        a, b = x[..., :half], x[..., half:]
        s = self.rope_sign * np.sin(th)
        return np.concatenate([a * np.cos(th) - b * s, a * s + b * np.cos(th)], axis=-1)

    def layer(self, l, x, rows, c0, kv, valid):
        """qwen2_layer: rows are (batch row, column, position); kv (2, B, KVH, cap, HD)."""
        H, NH, KVH, HD, I = self.H, self.NH, self.KVH, self.HD, self.I
        base = l * LAYER_ITEMS
        qkv_n = (NH + 2 * KVH) * HD
        eps = self.cfg.decoder.rms_norm_eps
        qkv = self.rms(x, self.v(base + 5, H), eps) @ self.w(base, qkv_n, H).T
        qkv = qkv + self.v(base + 4, qkv_n)
        M = x.shape[0]
        q = qkv[:, : NH * HD].reshape(M, NH, HD)
        k = qkv[:, NH * HD : (NH + KVH) * HD].reshape(M, KVH, HD)
        val = qkv[:, (NH + KVH) * HD :].reshape(M, KVH, HD)
        q = np.stack([self.rope(q[m], rows[m][2]) for m in range(M)])
        k = np.stack([self.rope(k[m], rows[m][2]) for m in range(M)])
        att = np.zeros((M, NH, HD))
        for m, (b, c, _) in enumerate(rows):
            for h in range(NH):
                g = h // (NH // KVH)
                cols = [j for j in range(c0) if valid is None or valid[b, j]]
                news = [r for r, (rb, rc, _) in enumerate(rows) if rb == b and rc <= c]
                keys = np.concatenate([kv[0, b, g, cols], k[news, g]])
                vals = np.concatenate([kv[1, b, g, cols], val[news, g]])
                s = keys @ q[m, h] / np.sqrt(HD)
                p = np.exp(s - s.max())
                att[m, h] = (p / p.sum()) @ vals
        x = x + att.reshape(M, H) @ self.w(base + 1, H, NH * HD).T
        gu = self.rms(x, self.v(base + 6, H), eps) @ self.w(base + 2, 2 * I, H).T
        x = x + (self.silu(gu[:, :I]) * gu[:, I:]) @ self.w(base + 3, H, I).T
        return x, np.stack([k, val])  # new keys/values (2, M, KVH, HD)

    def sample(self, noise, cond, temb, sched, cfg_scale):
        H, LAT, HF, NMOD, O = self.H, self.LAT, self.HF, self.NMOD, self.O
        eps = self.cfg.diffusion.rms_norm_eps
        c0 = cond @ self.w(O["HEAD_COND"], H, H).T
        S = sched.shape[0]
        mods = np.stack(
            [self.silu(c0 + temb[s]) @ self.w(O["HEAD_MOD"], NMOD * H, H).T for s in range(S)]
        )  # (S, 2, NMOD * H)
        x, x0p = noise.astype(np.float64), None
        for step in range(S):
            md = mods[step]
            hh = np.tile(x @ self.w(O["HEAD_NOISY"], H, LAT).T, (2, 1))
            for j in range(self.NHL):
                sh, sc, ga = (md[:, (3 * j + i) * H : (3 * j + i + 1) * H] for i in range(3))
                xn = self.rms(hh, self.v(O["HEAD_NORM"] + j, H), eps) * (1 + sc) + sh
                gu = xn @ self.w(O["HEAD_GU"] + j, 2 * HF, H).T
                act = self.silu(gu[:, :HF]) * gu[:, HF:]
                hh = hh + ga * (act @ self.w(O["HEAD_DOWN"] + j, H, HF).T)
            f = 3 * self.NHL * H  # the final layer's shift, then scale
            sh, sc = md[:, f : f + H], md[:, f + H : f + 2 * H]
            v = (self.rms(hh, None, eps) * (1 + sc) + sh) @ self.w(O["HEAD_FINAL"], LAT, H).T
            vv = v[1] + cfg_scale * (v[0] - v[1])
            alpha, sigma, ratio, c0_, c1 = sched[step]
            x0 = alpha * x - sigma * vv
            xn = ratio * x + c0_ * x0
            if c1 != 0 and step > 0:
                xn = xn + c1 * x0p
            x, x0p = xn, x0
        return x

    def feed(self, fed, kv, valid, info):
        H, LAT, O = self.H, self.LAT, self.O
        cfg = self.cfg
        eps = cfg.decoder.rms_norm_eps
        t1 = fed @ self.w(O["CONN_FC1"], H, LAT).T + self.v(O["CONN_FC1_B"], H)
        e = self.rms(t1, self.v(O["CONN_NORM"], H), eps) @ self.w(O["CONN_FC2"], H, H).T
        e = e + self.v(O["CONN_FC2_B"], H) + self.v(O["TYPE_SPEECH"], H)
        x = np.tile(e, (2, 1))
        col, p0, p1 = int(info[0]), int(info[1]), int(info[2])
        rows = [(0, col, p0), (1, col, p1)]
        newkv = []
        for l in range(cfg.tts_layers):
            x, nk = self.layer(cfg.lm_layers + l, x, rows, col, kv[l], valid)
            newkv.append(nk)
        out = self.rms(x, self.v(O["TTS_NORM"], H), eps)
        e1 = np.maximum(out[0] @ self.w(O["EOS_FC1"], H, H).T + self.v(O["EOS_FC1_B"], H), 0)
        eos = e1 @ self.w(O["EOS_FC2"], 1, H)[0] + self.v(O["EOS_FC2_B"], 1)[0]
        return out, eos, np.stack(newkv)

    def __call__(self, inputs, output_shapes, output_dtypes, grid, threadgroup):
        a = {n: np.array(x) for n, x in zip(self.spec.inputs, inputs, strict=True)}
        self.wh, self.wf, self.offs = a["wh"], a["wf"], a["offs"]
        out = [np.zeros(s, np.float64) for s in output_shapes]
        name = self.spec.name
        if name == "vv_window":
            self.window(a, out)
        else:
            sample = name.startswith(("vv_frame", "vv_sample"))
            feed = name.startswith(("vv_frame", "vv_feed"))
            fed_in = a["fed"].astype(np.float64)
            if sample:
                cond = np.stack([a["pos"], a["neg"]]).astype(np.float64)
                latent = self.sample(a["noise"], cond, a["temb"].astype(np.float64),
                                     a["sched"].astype(np.float64), float(a["cfg"][0]))  # fmt: skip
                out[1][0] = latent
            if feed:
                fed = fed_in[: self.LAT] if (not sample or fed_in[self.LAT] != 0) else latent
                res, eos, newkv = self.feed(fed, a["kv"].astype(np.float64), a["valid"], a["info"])
                out[2][0], out[3][0], out[4][0], out[5][...] = res[0], res[1], eos, newkv
        return [mx.array(o.astype(np.float32)) for o in out]

    def window(self, a, out) -> None:
        cfg = self.cfg
        L, lm_off, col, pos = (int(v) for v in a["info"][:4])
        eps = cfg.decoder.rms_norm_eps
        x = a["x"][:L].astype(np.float64)
        rows = [(0, lm_off + r, lm_off + r) for r in range(L)]
        lmkv = a["lmkv"].astype(np.float64)
        for l in range(cfg.lm_layers):
            x, nk = self.layer(l, x, rows, lm_off, lmkv[l], None)
            out[3][l, :, :L] = nk
        out[1][:L] = x
        x = x + self.v(self.O["TYPE_TEXT"], self.H)
        rows = [(0, col + r, pos + r) for r in range(L)]
        kv = a["kv"].astype(np.float64)
        for l in range(cfg.tts_layers):
            x, nk = self.layer(cfg.lm_layers + l, x, rows, col, kv[l], a["valid"])
            out[4][l, :, :L] = nk
        out[2][:L] = self.rms(x, self.v(self.O["TTS_NORM"], self.H), eps)
        assert L <= LMAX


def factory(cfg: VibeVoiceConfig, **kw):
    return lambda spec, header: Emulator(cfg, spec, **kw)
