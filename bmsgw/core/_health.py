# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
# ruff: noqa: PLR1730 -- explicit comparisons instead of min()/max(), as in _kernel.py
"""Health kernel of the core (Cython pure-Python mode, same rules as ``_kernel.py``): capacity, R0,
equivalent full cycles, depth-of-discharge histogram and self-discharge per cell.

It runs after :meth:`_kernel.Kernel.step` and reads the kernel's buffers (cell voltages, sample time and
current, cell SOC, the mean-cell EKF state, the anchor counter); it never writes them. Per fresh sample of a
pack:

* **Counting**: net charge ``ah`` (η on charge, as the kernel) and throughput ``thr`` = ∫|I| (trapezoid, none
  across gaps > MAX_GAP_S); equivalent full cycles = thr / 2 / rated capacity.
* **DoD histogram**: turning points of ``ah`` (a reversal needs DOD_HYST of capacity back from the extreme),
  counted online with the rainflow rule (three-point rule for the residue's start, four-point otherwise);
  a closed cycle counts two half-cycles, depth = range / present capacity, 10 bins of 10 %.
* **R0**: on a current step |ΔI| ≥ R0_STEP_C·C within one sample interval (≤ R0_MAX_DT_S) followed by one
  more sample with the current held, every cell's ΔV after one and two intervals is extrapolated linearly
  back to the step (removing what the RC branch, hysteresis and OCV move meanwhile without a model of them):
  r = ΔV(0)/ΔI, divided by the chemistry's R(T)/R(25 °C) at the pack temperature; a scalar Kalman filter per
  cell weighs it by its voltage noise plus R0_MODEL_REL.
  The R0 after R0_BASE_N steps is the cell's baseline; resistance SOH = 1 − (growth − 1)/(R_EOL − 1).
* **Capacity** at each anchor of the kernel: every cell's SOC from its own voltage on the OCV table —
  IR-compensated, hysteresis M(z, T)·h with the kernel's h and its σ, and at full/empty calibrations (not
  rested) also the kernel's RC voltage and a larger σ — with a variance. Against the cell's reference
  anchor, q = ΔAh/ΔSOC when |ΔSOC| ≥ CAP_MIN_DZ, weighted by its variance q²·(σ₁² + σ₂² + counting
  error²)/ΔSOC² in a scalar Kalman filter per cell; the reference moves to the new anchor after an update or
  when the new one is more certain.
* **Self-discharge** (imbalance drift) at rest anchors: each cell's SOC offset from the pack mean, against a
  reference ≥ SD_MIN_SPAN_S earlier, minus the offset change the charge in between explains with the cell
  capacities, per day; scalar Kalman filter per cell. Positive = the cell loses charge faster than the mean.
"""

from __future__ import annotations

from typing import Any

from bmsgw.core._kernel import _f64, _i32

MAX_GAP_S = 5.0  # no counting across sample gaps longer than this (as the kernel)
N_BINS = 10  # DoD histogram bins (10 % each)
RF_MAX = 32  # rainflow residue per pack; on overflow its oldest range is counted as a half-cycle
DOD_HYST = 0.01  # a turning point needs this fraction of capacity of movement back
R0_STEP_C = 0.1  # current step that measures R0, × rated capacity (A per Ah)
R0_MAX_DT_S = 5.0  # … seen between two samples at most this far apart, and one more sample as close
R0_HOLD_C = 0.02  # … in which the current held within this × rated capacity
R0_MODEL_REL = 0.05  # relative model error of one ΔV/ΔI (RC branch, OCV drift within the interval)
R0_Q_REL = 0.003  # relative random walk of R0 per measurement (lets the filter follow ageing)
R0_MAX_X = 20.0  # |ΔV/ΔI| beyond this × rated R0 is not a resistance (contactor, sensor glitch)
R0_BASE_N = 20  # the filtered R0 after this many steps is the cell's baseline ("new")
R_EOL = 2.0  # resistance growth factor that counts as end of life
REST_ITERS = 4  # fixed-point iterations of the hysteresis correction at a rest anchor
CAP_MIN_DZ = 0.2  # capacity samples need this SOC span between the two anchors
CAP_SD0 = 0.05  # prior σ of a cell's capacity, × rated
CAP_KAPPA = 0.005  # SOC-axis error of the OCV table (1σ) at a rest anchor
CAP_REST_V = 0.002  # model error of a rested cell voltage (relaxation left) (V)
CAP_DYN_V = 0.010  # … and of one at a full/empty calibration, under tail current (V)
CAP_COUNT_REL = 0.005  # relative error of the counted charge (sensor gain, offset) per Ah moved
CAP_MIN = 0.5  # plausible capacity samples, × rated
CAP_MAX = 1.3
SD_MIN_SPAN_S = 21600.0  # self-discharge samples span at least this long between rest anchors
SD_SD0 = 0.05  # prior σ of the drift rate (fraction of SOC per day)
SD_RW = 0.002  # random walk of the drift rate per √day
SECONDS_PER_DAY = 86400.0
NAN = float("nan")

# Per-pack scalars and per-cell arrays the wrapper persists (names of buffers on Health).
PACK_STATE: tuple[str, ...] = ("thr", "cal_days")
CELL_STATE: tuple[str, ...] = (
    "cap",
    "cap_var",
    "r0",
    "r0_var",
    "r0_n",
    "r0_base",
    "sd",
    "sd_var",
)


class Health:
    """Health state of every pack in flat buffers; :meth:`step` follows the kernel's newest step."""

    def __init__(
        self,
        kernel: Any,
        *,
        r0_rated: memoryview[float],
        kinds: tuple[int, int, int],
    ) -> None:
        """`kernel`: the :class:`_kernel.Kernel` whose buffers are read (tables, parameters, state).
        `r0_rated`: per pack, the chemistry's cell R0 at 25 °C for its rated capacity (Ω). `kinds`: the
        kernel's anchor codes for rest, full and empty."""
        n_packs: int = kernel.n_packs
        self.n_packs = n_packs
        self.n_grid: int = kernel.n_grid
        self.n_temps: int = kernel.n_temps
        self.n_rs: int = kernel.n_rs
        self.k_rest = kinds[0]
        self.k_full = kinds[1]
        self.k_empty = kinds[2]
        self.eta = kernel.eta
        self.sigma_v = kernel.sigma_v
        # the kernel's tables and buffers (read only)
        self.soc_grid: memoryview[float] = kernel.soc_grid
        self.ocv_tab: memoryview[float] = kernel.ocv_tab
        self.hyst_tab: memoryview[float] = kernel.hyst_tab
        self.tab_temps: memoryview[float] = kernel.tab_temps
        self.rs_temps: memoryview[float] = kernel.rs_temps
        self.rs_vals: memoryview[float] = kernel.rs_vals
        self.cell_off: memoryview[int] = kernel.cell_off
        self.cap_ah: memoryview[float] = kernel.cap_ah
        self.cell_v: memoryview[float] = kernel.cell_v
        self.s_t: memoryview[float] = kernel.s_t
        self.cur: memoryview[float] = kernel.cur
        self.online: memoryview[int] = kernel.online
        self.fresh: memoryview[int] = kernel.fresh
        self.k_soc: memoryview[float] = kernel.soc
        self.k_x: memoryview[float] = kernel.x
        self.k_pcov: memoryview[float] = kernel.pcov
        self.k_anchor_n: memoryview[int] = kernel.anchor_n
        self.k_anchor_kind: memoryview[int] = kernel.anchor_kind
        self.k_temp: memoryview[float] = kernel.temp_p
        self.r0_rated = r0_rated
        nc = self.cell_off[n_packs]
        self.n_cells = nc
        # per pack
        self.seen = _i32(n_packs)
        self.last_t = _f64(n_packs)
        self.last_i = _f64(n_packs)
        self.anchor_seen = _i32(n_packs)
        self.ah = _f64(n_packs)
        self.thr = _f64(n_packs)
        self.cal_days = _f64(n_packs)  # calendar days before the first sample of this run
        self.t0 = _f64(n_packs)
        self.t_now = _f64(n_packs)
        self.rf_dir = _i32(n_packs)
        self.rf_ext = _f64(n_packs)
        self.rf_n = _i32(n_packs)
        self.rf_stack = _f64(n_packs * RF_MAX)
        self.hist = _i32(n_packs * N_BINS)
        self.sd_ok = _i32(n_packs)
        self.sd_t = _f64(n_packs)
        self.sd_ah = _f64(n_packs)
        self.cap_p = _f64(n_packs)
        self.r0_p = _f64(n_packs)
        self.soh_cap = _f64(n_packs)
        self.soh_res = _f64(n_packs)
        self.soh = _f64(n_packs)
        self.ver = _i32(n_packs)
        self.r0_pend = _i32(n_packs)
        self.r0_di = _f64(n_packs)
        self.r0_dt = _f64(n_packs)
        # per cell
        self.prev_v = _f64(nc)
        self.dv1 = _f64(nc)
        self.cap = _f64(nc)
        self.cap_var = _f64(nc)
        self.cap_n = _i32(nc)
        self.ref_ok = _i32(nc)
        self.ref_z = _f64(nc)
        self.ref_var = _f64(nc)
        self.ref_ah = _f64(nc)
        self.ref_thr = _f64(nc)
        self.r0 = _f64(nc)
        self.r0_var = _f64(nc)
        self.r0_n = _i32(nc)
        self.r0_base = _f64(nc)
        self.sd = _f64(nc)
        self.sd_var = _f64(nc)
        self.sd_off = _f64(nc)
        self.zc = _f64(nc)
        self.zvar = _f64(nc)
        self.zdvar = _f64(nc)
        # scratch: OCV and M rows at the pack temperature
        self.orow = _f64(self.n_grid)
        self.mrow = _f64(self.n_grid)
        self.l_slope = 0.0
        self.l_m = 0.0
        for p in range(n_packs):
            self.reset(p)

    def reset(self, p: int) -> None:
        """Pack `p` as new: rated capacity, no R0, no cycles, no drift (restored values are written after)."""
        rated = self.cap_ah[p]
        self.seen[p] = 0
        self.ah[p] = 0.0
        self.thr[p] = 0.0
        self.cal_days[p] = 0.0
        self.rf_n[p] = 0
        self.rf_dir[p] = 0
        self.sd_ok[p] = 0
        for b in range(p * N_BINS, (p + 1) * N_BINS):
            self.hist[b] = 0
        for c in range(self.cell_off[p], self.cell_off[p + 1]):
            self.cap[c] = rated
            self.cap_var[c] = (CAP_SD0 * rated) * (CAP_SD0 * rated)
            self.cap_n[c] = 0
            self.ref_ok[c] = 0
            self.r0[c] = NAN
            self.r0_var[c] = 0.0
            self.r0_n[c] = 0
            self.r0_base[c] = NAN
            self.sd[c] = 0.0
            self.sd_var[c] = SD_SD0 * SD_SD0
        self.summarise(p)

    # ---------------------------------------------------------------- step

    def step(self) -> None:
        """Follow every pack whose sample the kernel just consumed (online and fresh)."""
        for p in range(self.n_packs):
            if self.online[p] != 0 and self.fresh[p] != 0:
                self._pack(p)

    def _pack(self, p: int) -> None:
        c0 = self.cell_off[p]
        c1 = self.cell_off[p + 1]
        st = self.s_t[p]
        cur = self.cur[p]
        cv = self.cell_v
        pv = self.prev_v
        if self.seen[p] == 0:
            self.seen[p] = 1
            self.t0[p] = st
            self.anchor_seen[p] = self.k_anchor_n[p]
            self.rf_stack[p * RF_MAX] = self.ah[p]
            self.rf_n[p] = 1
            self.rf_dir[p] = 0
        else:
            dt = st - self.last_t[p]
            if 0.0 < dt <= MAX_GAP_S:
                ia = 0.5 * (self.last_i[p] + cur)
                if ia > 0.0:
                    self.ah[p] += self.eta * ia * dt / 3600.0
                    self.thr[p] += ia * dt / 3600.0
                else:
                    self.ah[p] += ia * dt / 3600.0
                    self.thr[p] -= ia * dt / 3600.0
                self._rainflow(p)
                di = cur - self.last_i[p]
                step = R0_STEP_C * self.cap_ah[p]
                hold = R0_HOLD_C * self.cap_ah[p]
                if self.r0_pend[p] != 0 and dt <= R0_MAX_DT_S and -hold <= di <= hold:
                    self._r0_step(p, c0, c1, dt)
                self.r0_pend[p] = 0
                if (di >= step or di <= -step) and dt <= R0_MAX_DT_S:
                    self.r0_pend[p] = 1
                    self.r0_di[p] = di
                    self.r0_dt[p] = dt
                    for c in range(c0, c1):
                        self.dv1[c] = cv[c] - pv[c]
            else:
                self.r0_pend[p] = 0
            if self.k_anchor_n[p] != self.anchor_seen[p]:
                self.anchor_seen[p] = self.k_anchor_n[p]
                self._anchor(p, c0, c1, st, cur, self.k_anchor_kind[p])
        for c in range(c0, c1):
            pv[c] = cv[c]
        self.last_t[p] = st
        self.last_i[p] = cur
        self.t_now[p] = st

    # ---------------------------------------------------------------- cycles

    def _rainflow(self, p: int) -> None:
        """Turning points of the charge counter (with hysteresis) into the rainflow residue."""
        a = self.ah[p]
        e = self.rf_ext[p]
        hy = DOD_HYST * self.cap_ah[p]
        d = self.rf_dir[p]
        if d == 0:
            s = self.rf_stack[p * RF_MAX + self.rf_n[p] - 1]
            if a >= s + hy:
                self.rf_dir[p] = 1
                self.rf_ext[p] = a
            elif a <= s - hy:
                self.rf_dir[p] = -1
                self.rf_ext[p] = a
        elif d > 0:
            if a > e:
                self.rf_ext[p] = a
            elif a <= e - hy:
                self._reversal(p, e)
                self.rf_dir[p] = -1
                self.rf_ext[p] = a
        elif a < e:
            self.rf_ext[p] = a
        elif a >= e + hy:
            self._reversal(p, e)
            self.rf_dir[p] = 1
            self.rf_ext[p] = a

    def _reversal(self, p: int, e: float) -> None:
        """Push turning point `e` and count what it closes (ASTM E1049 rainflow, online form)."""
        b = p * RF_MAX
        st = self.rf_stack
        n = self.rf_n[p]
        if n == RF_MAX:
            self._count(p, st[b + 1] - st[b], 1)
            for j in range(n - 1):
                st[b + j] = st[b + j + 1]
            n -= 1
        st[b + n] = e
        n += 1
        while n >= 3:
            x = st[b + n - 1] - st[b + n - 2]
            y = st[b + n - 2] - st[b + n - 3]
            if x < 0.0:
                x = -x
            if y < 0.0:
                y = -y
            if x < y:
                break
            if n == 3:
                self._count(p, y, 1)
                st[b] = st[b + 1]
                st[b + 1] = st[b + 2]
                n = 2
            else:
                self._count(p, y, 2)
                st[b + n - 3] = st[b + n - 1]
                n -= 2
        self.rf_n[p] = n

    def _count(self, p: int, rng: float, halves: int) -> None:
        if rng < 0.0:
            rng = -rng
        k = int(rng / self.cap_p[p] * N_BINS)
        if k >= N_BINS:
            k = N_BINS - 1
        self.hist[p * N_BINS + k] += halves
        self.ver[p] += 1

    # ---------------------------------------------------------------- R0

    def _r0_step(self, p: int, c0: int, c1: int, dt: float) -> None:
        """Every cell's R0 from a current step ΔI and the two samples after it (the current held), at
        25 °C, into its scalar filter: ΔV(t) = R0·ΔI + slope·t (RC branch, hysteresis and OCV drift start
        linearly) extrapolated to t = 0, so no cell model enters."""
        rs = self._r_scale(self.k_temp[p])
        di = self.r0_di[p]
        t1 = self.r0_dt[p]
        t2 = t1 + dt
        hi = R0_MAX_X * self.r0_rated[p]
        noise = self.sigma_v * self.sigma_v * (t1 * t1 + t2 * t2 + dt * dt) / (dt * dt * di * di)
        cv = self.cell_v
        pv = self.prev_v
        for c in range(c0, c1):
            d1 = self.dv1[c]
            r = (d1 * t2 - (d1 + cv[c] - pv[c]) * t1) / dt / di / rs
            if not -hi < r < hi:
                continue
            if self.r0_n[c] == 0:
                self.r0[c] = r
                self.r0_var[c] = noise + (R0_MODEL_REL * self.r0_rated[p]) * (R0_MODEL_REL * self.r0_rated[p])
            else:
                r0 = self.r0[c]
                pvar = self.r0_var[c] + (R0_Q_REL * r0) * (R0_Q_REL * r0)
                m = noise + (R0_MODEL_REL * r0) * (R0_MODEL_REL * r0)
                k = pvar / (pvar + m)
                self.r0[c] = r0 + k * (r - r0)
                self.r0_var[c] = (1.0 - k) * pvar
            self.r0_n[c] += 1
            if self.r0_n[c] == R0_BASE_N:
                self.r0_base[c] = self.r0[c]
        self.summarise(p)

    def _r_scale(self, temp: float) -> float:
        """R(T)/R(25 °C), clamped to the table's ends."""
        xs = self.rs_temps
        ys = self.rs_vals
        n = self.n_rs
        if temp != temp:  # noqa: PLR0124 -- NaN: no scaling
            return 1.0
        if temp <= xs[0]:
            return ys[0]
        if temp >= xs[n - 1]:
            return ys[n - 1]
        j = int(temp - xs[0])  # the wrapper samples R(T) every 1 °C
        if j > n - 2:
            j = n - 2
        while j > 0 and xs[j] > temp:
            j -= 1
        while j < n - 2 and xs[j + 1] <= temp:
            j += 1
        return ys[j] + (ys[j + 1] - ys[j]) * (temp - xs[j]) / (xs[j + 1] - xs[j])

    # ---------------------------------------------------------------- anchors

    def _anchor(self, p: int, c0: int, c1: int, st: float, cur: float, kind: int) -> None:
        """The kernel anchored pack `p`: every cell's SOC and variance, then capacity and drift."""
        if kind not in (self.k_rest, self.k_full, self.k_empty):
            return
        # after a rest the RC branch has relaxed; at a full/empty calibration it has not (larger σ)
        ev = 0.0 if kind == self.k_rest else CAP_DYN_V * CAP_DYN_V
        v1 = 0.0 if kind == self.k_rest else self.k_x[5 * p + 1]
        self._rows(self.k_temp[p])
        h = self.k_x[5 * p + 2]
        hv = self.k_pcov[25 * p + 12]
        rs = self._r_scale(self.k_temp[p])
        for c in range(c0, c1):
            r0 = self.r0[c] if self.r0_n[c] > 0 else self.r0_rated[p]
            self._ocv_soc(c, self.cell_v[c] - cur * r0 * rs - v1, h, hv, ev)
        self._capacity(p, c0, c1)
        if kind == self.k_rest:
            self._drift(p, c0, c1, st)
        self.summarise(p)

    def _rows(self, temp: float) -> None:
        """OCV and M rows at `temp` (linear between the table temperatures, clamped at the ends)."""
        tt = self.tab_temps
        nt = self.n_temps
        n = self.n_grid
        a = 0
        w = 0.0
        if nt > 1 and temp == temp:  # noqa: PLR0124 -- NaN: first row
            if temp >= tt[nt - 1]:
                a = nt - 1
            elif temp > tt[0]:
                while a < nt - 2 and tt[a + 1] <= temp:
                    a += 1
                w = (temp - tt[a]) / (tt[a + 1] - tt[a])
        b = a + 1 if w > 0.0 else a
        for j in range(n):
            self.orow[j] = (1.0 - w) * self.ocv_tab[a * n + j] + w * self.ocv_tab[b * n + j]
            self.mrow[j] = (1.0 - w) * self.hyst_tab[a * n + j] + w * self.hyst_tab[b * n + j]

    def _invert(self, v: float) -> float:
        """SOC on the OCV row for voltage `v` (clamped to 0..1); sets l_slope (dV/dSOC) and l_m (M there)."""
        o = self.orow
        g = self.soc_grid
        n = self.n_grid
        if v <= o[0]:
            self.l_slope = 0.0
            self.l_m = self.mrow[0]
            return g[0]
        if v >= o[n - 1]:
            self.l_slope = 0.0
            self.l_m = self.mrow[n - 1]
            return g[n - 1]
        lo = 0
        hi = n - 1
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if o[mid] <= v:
                lo = mid
            else:
                hi = mid
        f = (v - o[lo]) / (o[lo + 1] - o[lo])
        self.l_slope = (o[lo + 1] - o[lo]) / (g[lo + 1] - g[lo])
        self.l_m = self.mrow[lo] + f * (self.mrow[lo + 1] - self.mrow[lo])
        return g[lo] + f * (g[lo + 1] - g[lo])

    def _ocv_soc(self, c: int, v: float, h: float, hv: float, ev: float) -> None:
        """Cell `c`'s SOC from its IR/RC-compensated voltage `v` (hysteresis state `h` with variance `hv`,
        extra voltage variance `ev`) into zc/zvar (absolute) and zdvar (cell-to-cell)."""
        z = self._invert(v)
        for _ in range(REST_ITERS):  # fixed point: M depends on the SOC it corrects
            z = self._invert(v - self.l_m * h)
        s = self.l_slope
        if s <= 0.0:  # outside the table: no information
            self.zc[c] = z
            self.zvar[c] = 1.0
            self.zdvar[c] = 1.0
            return
        sv = self.sigma_v * self.sigma_v
        self.zc[c] = z
        self.zvar[c] = (sv + ev + CAP_REST_V * CAP_REST_V + self.l_m * self.l_m * hv) / (s * s) + (
            CAP_KAPPA * CAP_KAPPA
        )
        self.zdvar[c] = (sv + ev) / (s * s)

    def _capacity(self, p: int, c0: int, c1: int) -> None:
        """Capacity samples ΔAh/ΔSOC against each cell's reference anchor, filtered; references move."""
        rated = self.cap_ah[p]
        a = self.ah[p]
        for c in range(c0, c1):
            z = self.zc[c]
            var = self.zvar[c]
            cnt = 0.0
            moved = False
            if self.ref_ok[c] != 0:
                cnt = CAP_COUNT_REL * (self.thr[p] - self.ref_thr[c]) / self.cap[c]
                dz = z - self.ref_z[c]
                if dz >= CAP_MIN_DZ or dz <= -CAP_MIN_DZ:
                    q = (a - self.ref_ah[c]) / dz
                    if CAP_MIN * rated <= q <= CAP_MAX * rated:
                        m = q * q * (var + self.ref_var[c] + cnt * cnt) / (dz * dz)
                        pvar = self.cap_var[c]
                        k = pvar / (pvar + m)
                        self.cap[c] += k * (q - self.cap[c])
                        self.cap_var[c] = (1.0 - k) * pvar
                        self.cap_n[c] += 1
                        moved = True
            if self.ref_ok[c] == 0 or moved or var <= self.ref_var[c] + cnt * cnt:
                self.ref_ok[c] = 1
                self.ref_z[c] = z
                self.ref_var[c] = var
                self.ref_ah[c] = a
                self.ref_thr[c] = self.thr[p]

    def _drift(self, p: int, c0: int, c1: int, st: float) -> None:
        """Self-discharge: each cell's offset from the pack mean against the reference rest, per day."""
        n = c1 - c0
        zsum = 0.0
        for c in range(c0, c1):
            zsum += self.zc[c]
        zbar = zsum / n
        if self.sd_ok[p] == 0:
            self.sd_ok[p] = 1
            self.sd_t[p] = st
            self.sd_ah[p] = self.ah[p]
            for c in range(c0, c1):
                self.sd_off[c] = self.zc[c] - zbar
            return
        span = st - self.sd_t[p]
        if span < SD_MIN_SPAN_S:
            return
        days = span / SECONDS_PER_DAY
        dah = self.ah[p] - self.sd_ah[p]
        esum = 0.0
        for c in range(c0, c1):
            esum += dah / self.cap[c]
        ebar = esum / n
        for c in range(c0, c1):
            off = self.zc[c] - zbar
            if self.zdvar[c] < 1.0:
                d = -((off - self.sd_off[c]) - (dah / self.cap[c] - ebar)) / days
                e = dah / self.cap[c]
                m = (2.0 * self.zdvar[c] + e * e * self.cap_var[c] / (self.cap[c] * self.cap[c])) / (
                    days * days
                )
                pvar = self.sd_var[c] + SD_RW * SD_RW * days
                k = pvar / (pvar + m)
                self.sd[c] += k * (d - self.sd[c])
                self.sd_var[c] = (1.0 - k) * pvar
            self.sd_off[c] = off
        self.sd_t[p] = st
        self.sd_ah[p] = self.ah[p]

    # ---------------------------------------------------------------- summary

    def summarise(self, p: int) -> None:
        """Pack figures from the cells: weakest capacity, mean R0, the two SOH criteria and SOH."""
        c0 = self.cell_off[p]
        c1 = self.cell_off[p + 1]
        qmin = self.cap[c0]
        rsum = 0.0
        nr = 0
        g = 1.0
        for c in range(c0, c1):
            if self.cap[c] < qmin:
                qmin = self.cap[c]
            if self.r0_n[c] > 0:
                rsum += self.r0[c]
                nr += 1
            if self.r0_n[c] >= R0_BASE_N and self.r0_base[c] > 0.0 and self.r0[c] > g * self.r0_base[c]:
                g = self.r0[c] / self.r0_base[c]
        self.cap_p[p] = qmin
        self.r0_p[p] = rsum / nr if nr > 0 else NAN
        sc = qmin / self.cap_ah[p]
        if sc > 1.0:
            sc = 1.0
        elif sc < 0.0:
            sc = 0.0
        sr = 1.0 - (g - 1.0) / (R_EOL - 1.0)
        if sr < 0.0:
            sr = 0.0
        self.soh_cap[p] = sc
        self.soh_res[p] = sr
        self.soh[p] = sc if sc < sr else sr
        self.ver[p] += 1
