# C declarations for _health.py (Cython pure-Python mode). Keep in step with the .py: every function and
# attribute declared here must exist there with the same name and arity.
cimport cython

cdef Py_ssize_t N_BINS, RF_MAX, R0_BASE_N, REST_ITERS
cdef double MAX_GAP_S, DOD_HYST, R0_STEP_C, R0_MAX_DT_S, R0_HOLD_C, R0_MODEL_REL, R0_Q_REL, R0_MAX_X, R_EOL
cdef double CAP_MIN_DZ, CAP_SD0, CAP_KAPPA, CAP_REST_V, CAP_DYN_V, CAP_COUNT_REL, CAP_MIN, CAP_MAX
cdef double SD_MIN_SPAN_S, SD_SD0, SD_RW, SECONDS_PER_DAY, NAN


@cython.final
cdef class Health:
    cdef readonly Py_ssize_t n_packs, n_cells, n_grid, n_temps, n_rs
    cdef readonly int k_rest, k_full, k_empty
    cdef readonly double eta, sigma_v
    # the kernel's tables and buffers (read only)
    cdef double[::1] soc_grid, ocv_tab, hyst_tab, tab_temps, rs_temps, rs_vals, cap_ah, cell_v, s_t, cur
    cdef double[::1] k_soc, k_x, k_pcov, k_temp
    cdef int[::1] cell_off, online, fresh, k_anchor_n, k_anchor_kind
    cdef readonly double[::1] r0_rated
    # per pack
    cdef readonly int[::1] seen, anchor_seen, rf_dir, rf_n, hist, sd_ok, ver, r0_pend
    cdef readonly double[::1] last_t, last_i, ah, thr, cal_days, t0, t_now, rf_ext, rf_stack
    cdef readonly double[::1] sd_t, sd_ah, cap_p, r0_p, soh_cap, soh_res, soh, r0_di, r0_dt
    # per cell
    cdef readonly double[::1] prev_v, dv1, cap, cap_var, ref_z, ref_var, ref_ah, ref_thr, r0, r0_var, r0_base
    cdef readonly double[::1] sd, sd_var, sd_off, zc, zvar, zdvar
    cdef readonly int[::1] cap_n, ref_ok, r0_n
    # scratch
    cdef double[::1] orow, mrow
    cdef double l_slope, l_m

    @cython.locals(rated=double, b=Py_ssize_t, c=Py_ssize_t)
    cpdef void reset(self, Py_ssize_t p)

    @cython.locals(p=Py_ssize_t)
    cpdef void step(self)

    @cython.locals(
        c0=Py_ssize_t, c1=Py_ssize_t, c=Py_ssize_t, cv="double[::1]", pv="double[::1]",
        st=double, cur=double, dt=double, ia=double, di=double, step=double, hold=double,
    )
    cdef void _pack(self, Py_ssize_t p) noexcept

    @cython.locals(a=double, e=double, hy=double, s=double, d=int)
    cdef void _rainflow(self, Py_ssize_t p) noexcept

    @cython.locals(b=Py_ssize_t, n=Py_ssize_t, j=Py_ssize_t, st="double[::1]", x=double, y=double)
    cdef void _reversal(self, Py_ssize_t p, double e) noexcept

    @cython.locals(k=Py_ssize_t)
    cdef void _count(self, Py_ssize_t p, double rng, int halves) noexcept

    @cython.locals(
        c=Py_ssize_t, cv="double[::1]", pv="double[::1]", rs=double, di=double, t1=double, t2=double,
        d1=double, hi=double, noise=double, r=double, r0=double, pvar=double, m=double, k=double,
    )
    cdef void _r0_step(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double dt) noexcept

    @cython.locals(xs="double[::1]", ys="double[::1]", n=Py_ssize_t, j=Py_ssize_t)
    cdef double _r_scale(self, double temp) noexcept

    @cython.locals(c=Py_ssize_t, h=double, hv=double, rs=double, r0=double, ev=double, v1=double)
    cdef void _anchor(
        self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double st, double cur, int kind
    ) noexcept

    @cython.locals(tt="double[::1]", nt=Py_ssize_t, n=Py_ssize_t, a=Py_ssize_t, b=Py_ssize_t, j=Py_ssize_t, w=double)
    cdef void _rows(self, double temp) noexcept

    @cython.locals(
        o="double[::1]", g="double[::1]", n=Py_ssize_t, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, f=double
    )
    cdef double _invert(self, double v) noexcept

    @cython.locals(z=double, s=double, sv=double, _=Py_ssize_t)
    cdef void _ocv_soc(self, Py_ssize_t c, double v, double h, double hv, double ev) noexcept

    @cython.locals(
        c=Py_ssize_t, rated=double, a=double, z=double, var=double, cnt=double, moved=bint, dz=double,
        q=double, m=double, pvar=double, k=double,
    )
    cdef void _capacity(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1) noexcept

    @cython.locals(
        c=Py_ssize_t, n=Py_ssize_t, zsum=double, zbar=double, span=double, days=double, dah=double,
        esum=double, ebar=double, off=double, d=double, e=double, m=double, pvar=double, k=double,
    )
    cdef void _drift(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double st) noexcept

    @cython.locals(
        c0=Py_ssize_t, c1=Py_ssize_t, c=Py_ssize_t, nr=Py_ssize_t,
        qmin=double, rsum=double, g=double, sc=double, sr=double,
    )
    cpdef void summarise(self, Py_ssize_t p)
