# C declarations for _kernel.py (Cython pure-Python mode). Keep in step with the .py: every function and
# attribute declared here must exist there with the same name and arity.
cimport cython

cdef int R_CONFIG, R_CELL_VOLTAGE_HIGH, R_CELL_VOLTAGE_LOW, R_CELL_OVERVOLTAGE, R_CELL_UNDERVOLTAGE
cdef int R_TEMPERATURE_HIGH, R_TEMPERATURE_LOW, R_OVERTEMPERATURE, R_UNDERTEMPERATURE, R_COLD_CHARGE
cdef int R_OVERCURRENT, R_FAULT, R_COMM_LOST, R_RECOVERY, R_PACK_VOLTAGE, R_SOC_FULL, R_SOC_EMPTY
cdef int R_CELL_IMBALANCE, R_SENSOR_FAULT, R_THERMAL_RUNAWAY
cdef int A_OV, A_UV, A_OT, A_UT, A_CUT, A_OCC, A_ODC, A_BMS, A_POV, A_PUV, A_IMB, A_SEN, A_TR
cdef int S_BULK, S_ABSORPTION, S_FLOAT
cdef int WARNING, ALARM, FAULT
cdef long long F_BMS_FAULT, F_ALARM_CELL_OV, F_ALARM_CELL_UV, F_ALARM_OVERTEMP, F_ALARM_UNDERTEMP
cdef long long F_ALARM_CHARGE_OC, F_ALARM_DISCHARGE_OC, F_ALARM_SHORT_CIRCUIT, F_ALARM_INTERNAL
cdef Py_ssize_t L_OV_WARN, L_OV_ALARM, L_OV_FAULT, L_UV_WARN, L_UV_ALARM, L_UV_FAULT
cdef Py_ssize_t L_POV_WARN, L_POV_ALARM, L_POV_FAULT, L_PUV_WARN, L_PUV_ALARM, L_PUV_FAULT
cdef Py_ssize_t L_OTC_WARN, L_OTC_ALARM, L_OTC_FAULT, L_OTD_WARN, L_OTD_ALARM, L_OTD_FAULT
cdef Py_ssize_t L_UTD_WARN, L_UTD_ALARM, L_UTD_FAULT, L_CUT_WARN, L_CUT_ALARM, L_CUT_FAULT
cdef Py_ssize_t L_TR_WARN, L_TR_ALARM, L_TR_ISOLATE, L_TR_CONFIRMED
cdef Py_ssize_t L_OCC_WARN, L_OCC_ALARM, L_OCC_FAULT, L_ODC_WARN, L_ODC_ALARM, L_ODC_FAULT
cdef Py_ssize_t L_IMB_WARN, L_IMB_ALARM, L_IMB_FAULT, L_SEN_WARN, L_SEN_ALARM, L_SEN_FAULT, L_FLAGS0
cdef Py_ssize_t N_LATCH, ANCHOR_ITERS, SEG_BINS
cdef int K_NONE, K_CONVERGED, K_REST, K_FULL, K_EMPTY, EST_EKF, EST_COUNTING
cdef int SET_ADMITTED, SET_FULL, SET_ONLINE
cdef double MAX_GAP_S, MAX_RAMP_DT_S, REST_FILTER_S
cdef double INIT_OCV_V, INIT_SD_MIN, INIT_SD_MAX, KNOWN_SD, KNOWN_CELL_SD, V1_SD0, H_SD0, RHO_SD0
cdef double CAP_SD_RATED, CAP_SD, CELL_CAP_SD, CELL_RW, V1_REL, H_RW, BIAS_RW_C, RHO_RW
cdef double KAPPA, R0_SPREAD, REST_SIGMA_V, CAL_SD, H_DEADBAND_C, B_MAX_C, RHO_MIN, RHO_MAX
cdef double CONVERGED_SD, ANCHOR_SD, CAP_MIN_DZ, CAP_GAIN, CAP_MIN, CAP_MAX
cdef double TIME_EPS, RAMP_REASON_TOL, CVL_MARGIN_V, UNSET, UNSET_BELOW, NAN, TR_FILTER_S, TR_RAW_MAX, TR_VDROP, TR_DERATE

@cython.locals(lo=Py_ssize_t)
cpdef double interp(double x, double[::1] xs, double[::1] ys, Py_ssize_t n) noexcept

@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cpdef Py_ssize_t bracket(double x, double[::1] xs, Py_ssize_t n) noexcept

cpdef double derate_high(double x, double start, double end) noexcept
cpdef double derate_low(double x, double end, double start) noexcept
cpdef int ramp_reason(double gap, int reason, int prev, double full) noexcept


@cython.final
cdef class Kernel:
    # sizes
    cdef readonly Py_ssize_t n_packs, n_cells, n_sens, n_grid, n_temps, n_rs
    # parameters
    cdef readonly double v_max_alarm, v_max_warn, v_target, v_min_warn, v_min_alarm, v_hyst
    cdef readonly double chg_t_min, chg_t_max, dis_t_min, dis_t_max, t_margin, t_hyst
    cdef readonly double max_chg, max_dis, oc_factor, oc_time, debounce
    cdef readonly double chg_v, dis_v, rest_i, rest_time, ramp_s
    cdef readonly double full_margin, full_hold, empty_v, sigma_v
    cdef readonly double r0_ah, r1_ah, tau1, gamma, tau_h, eta, sigma_m, tc_s, hm_var
    cdef readonly int estimator
    cdef readonly double v_max_fault, v_min_fault, t_fault, oc_fault_f, oc_fault_t, oc_k, sens_t, soc_floor
    cdef readonly double float_v, abs_max, rebulk_soc, rebulk_spread
    cdef readonly double tr_warn, tr_alarm, tr_confirm, tr_confirm_s, tr_delta
    cdef readonly double[::1] pv_hi, pv_lo, imb_v
    cdef double[::1] dr_v0, dr_v1, dr_p0, dr_p1, dr_th0, dr_th1, dr_tl0, dr_tl1, dr_s0, dr_s1
    # tables
    cdef readonly double[::1] soc_grid, ocv_tab, hyst_tab, tab_temps, rs_temps, rs_vals
    cdef readonly int[::1] cell_off, sens_off
    cdef readonly double[::1] cap_ah, sig_i, bias_sd, tail_i
    cdef int[::1] lat_level, lat_zero_c, lat_zero_d, lat_reason, lat_keep
    cdef long long[::1] lat_flag
    # inputs, written by the caller before step()
    cdef readonly double[::1] cell_v, cell_t, s_t, cur
    cdef readonly int[::1] online
    cdef readonly long long[::1] flags
    cdef readonly double[::1] share, admit
    # per-cell state
    cdef readonly double[::1] soc, dz, dz_var
    # per-pack state and outputs
    cdef readonly int[::1] seen, soc_known, prev_on, fresh, pending
    cdef readonly double[::1] last_t, last_i, rest_since, rest_next, full_since, empty_since
    cdef readonly int[::1] full_done, empty_done
    cdef readonly double[::1] x, pcov, pxm, ibar, irest, cap_est, ah, ref_z, ref_ah, thr
    cdef readonly int[::1] ref_ok, cap_n, anchor_n, anchor_kind, converged
    cdef readonly double[::1] anchor_t, first_anchor_t, temp_p, r0_p
    cdef readonly double[::1] soc_pack, vmin, vmax, tmin, tmax, excess, ccl_p, dcl_p
    cdef readonly int[::1] ccl_r, dcl_r, contactor
    # latches, pack-major (N_LATCH per pack)
    cdef readonly int[::1] lat_on
    cdef readonly double[::1] lat_since, lat_pend
    # protection state: overcurrent I²t (2 per pack), thermal filter (per sensor), charge stage
    cdef readonly double[::1] vmean, oc_acc, oc_t, oc_i, th_t, th_prev, th_rate, tr_rate, tr_delta_p
    cdef readonly int stage, shutdown, float_armed
    cdef readonly double stage_since, abs_time, tail_since
    # scratch
    cdef double l_ocv, l_docv, l_m, l_dm, tw
    cdef Py_ssize_t tt0, tt1
    cdef double seg_scale
    cdef int[::1] seg_idx
    cdef double[::1] kv, fp, x0, brow, hrow, bslope, hslope, c_res, c_hc
    # system outputs
    cdef readonly double soc_sys, ccl, dcl, cvl, dvl, comm_lost_since, t_prev
    cdef readonly int ccl_reason, dcl_reason, cvl_reason, dvl_reason, n_online, have_data, comm_lost
    cdef readonly long long alarm_version
    cdef readonly int ccl_pack, dcl_pack, n_admit
    cdef int cb_pack, cb_reason

    cpdef void set_pack(self, Py_ssize_t p, int online, double t, double current, long long flags, int fresh)
    cpdef void set_share(self, Py_ssize_t p, double share, double admit)

    @cython.locals(p=Py_ssize_t, k=Py_ssize_t, n_online=int)
    cpdef void step(self, double t)

    @cython.locals(p=Py_ssize_t, k=Py_ssize_t, j=Py_ssize_t, n=int, fault=int)
    cpdef int reset_latched(self, Py_ssize_t pack)

    @cython.locals(j=Py_ssize_t)
    cpdef void set_latched(self, Py_ssize_t p, Py_ssize_t k, double since)

    @cython.locals(p=Py_ssize_t, shut=int)
    cdef void _shutdown(self) noexcept

    @cython.locals(
        cv="double[::1]", soc="double[::1]",
        c0=Py_ssize_t, c1=Py_ssize_t, s0=Py_ssize_t, s1=Py_ssize_t, c=Py_ssize_t, s=Py_ssize_t,
        j=Py_ssize_t, k=Py_ssize_t,
        cur=double, st=double, vmin=double, vmax=double, excess=double, v=double, tmin=double,
        tmax=double, x=double, smin=double, smax=double, den=double, vsum=double, vmean=double, dt=double,
        a=double, y=double, tf=double, rate=double, spread=double,
        vh=double, th=double, db=double, warn=double, lim=double,
        has_t=bint, charging=bint, on=bint, off=bint, pend=bint, flags="long long",
        zc=int, zc_level=int, zd=int, zd_level=int, fault=int, level=int, nbad=int,
    )
    cdef void _pack(self, Py_ssize_t p, double t) noexcept

    @cython.locals(lim=double, reason=int, sg=double, imax=double, x=double, f=double)
    cdef void _pack_limit(
        self, Py_ssize_t p, Py_ssize_t d, int zero, double v, double vmean, double tmin, double tmax,
        double spread, bint has_t,
    ) noexcept

    @cython.locals(
        tt="double[::1]", s=Py_ssize_t, last=double, dt=double, a=double, x=double, y=double, r=double,
        rate=double,
        delta=double,
    )
    cdef void _thermal(self, Py_ssize_t p, Py_ssize_t s0, Py_ssize_t s1, double st) noexcept

    @cython.locals(
        s=Py_ssize_t, c=Py_ssize_t, n=Py_ssize_t, j5=Py_ssize_t,
        temp=double, tsum=double, rs=double, r0n=double, dt=double, vbar=double, sv2=double,
        scale=double, zb=double, x=double, a=double, resting=bint, rest=int,
    )
    cdef void _soc_step(
        self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t s0, Py_ssize_t s1, double cur, double st,
        bint has_t,
    ) noexcept

    cdef int _rest_timer(self, Py_ssize_t p, bint resting, double st, int restart) noexcept

    @cython.locals(
        nt=Py_ssize_t, k=Py_ssize_t, n=Py_ssize_t, a=Py_ssize_t, b=Py_ssize_t, w=double, dg=double,
        tt="double[::1]", t="double[::1]", h="double[::1]", g="double[::1]",
    )
    cdef void _temperature(self, double temp) noexcept

    @cython.locals(lo=Py_ssize_t, b=Py_ssize_t, x=double, dz=double)
    cdef void _lookup(self, double z) noexcept

    cdef double _soc_from_ocv(self, double v) noexcept

    @cython.locals(
        j5=Py_ssize_t, jp=Py_ssize_t, n=Py_ssize_t, c=Py_ssize_t, k=Py_ssize_t,
        zsum=double, z=double, zb=double, sd=double, bsd=double,
    )
    cdef void _init_soc(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double cur, double r0n) noexcept

    @cython.locals(
        j5=Py_ssize_t, jp=Py_ssize_t, k=Py_ssize_t, r=Py_ssize_t, c=Py_ssize_t,
        x="double[::1]", pc="double[::1]", fp="double[::1]", xm="double[::1]",
        ic=double, eta=double, cap=double, ek=double, a1=double, ah=double, ib=double, dead=double,
        sg=double, aib=double, ahy=double, f03=double, f13=double, aic=double, si=double, q=double, d=double,
    )
    cdef void _predict(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double dt, double i_avg, double r1) noexcept

    @cython.locals(
        j5=Py_ssize_t, jp=Py_ssize_t, k=Py_ssize_t, m=Py_ssize_t, q=Py_ssize_t, _it=Py_ssize_t,
        x="double[::1]", pc="double[::1]", kv="double[::1]", x0="double[::1]", xm="double[::1]",
        h=double, rho=double, ic=double, h0=double, h2=double, h3=double, h4=double,
        innov=double, r=double, sv=double, hm=double, hc=double, c3=double,
    )
    cdef void _update_mean(
        self, Py_ssize_t p, double v, double cur, double r0n, double base_var, double scale, Py_ssize_t iters,
        int hold_b,
    ) noexcept

    @cython.locals(j5=Py_ssize_t, x="double[::1]", bmax=double)
    cdef void _clamp_state(self, Py_ssize_t p) noexcept

    @cython.locals(
        j5=Py_ssize_t, c=Py_ssize_t, cv="double[::1]",
        zb=double, v1=double, h=double, ir=double, dv=double, cvar=double, hc=double, pv=double,
        sv=double, k=double, res="double[::1]", esum=double,
    )
    cdef void _update_cells(
        self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double cur, double r0n, double base_var, double scale
    ) noexcept

    @cython.locals(cv="double[::1]", tail=double, best=Py_ssize_t, c=Py_ssize_t)
    cdef void _calibrations(self, Py_ssize_t p, Py_ssize_t c0, Py_ssize_t c1, double cur, double st) noexcept

    @cython.locals(
        j5=Py_ssize_t, jp=Py_ssize_t, k=Py_ssize_t, m=Py_ssize_t,
        x="double[::1]", pc="double[::1]", kv="double[::1]", delta=double, sv=double, q=double, a=double,
        g=double,
    )
    cdef void _calibrate(self, Py_ssize_t p, Py_ssize_t cell, double target) noexcept

    @cython.locals(z=double, dz=double, q=double, rated=double)
    cdef void _anchor(self, Py_ssize_t p, double st, int kind) noexcept

    cdef bint _latch(self, Py_ssize_t j, double t, bint on, bint off, double delay_on) noexcept

    @cython.locals(p=Py_ssize_t, wsum=double, csum=double)
    cdef void _system_soc(self, int all_packs) noexcept

    @cython.locals(p=Py_ssize_t, ssum=double, best=double, x=double)
    cdef double _share_limit(self, double[::1] lim, int[::1] why, int which) noexcept

    cdef bint _in_set(self, Py_ssize_t p, int which) noexcept

    @cython.locals(
        p=Py_ssize_t, first=Py_ssize_t, n=Py_ssize_t,
        dt=double, ccl=double, dcl=double, cap=double, cvl=double, dvl=double,
        ccl_r=int, dcl_r=int, cvl_r=int,
        n_in=int, a_min=double, ramp_p=int, mode=int, ccl_pk=int, dcl_pk=int, old=double,
    )
    cdef void _system(self, double t, int n_online) noexcept

    @cython.locals(
        p=Py_ssize_t, c=Py_ssize_t, n=Py_ssize_t, stage=int,
        vtop=double, spread=double, cur=double, tail=double, target=double, cvl=double, dvl=double,
        cap=double, lim=double, x=double, clip=double, excess=double, at_cv=bint, done=bint, cvl_r=int,
    )
    cdef void _charge_voltage(self, double t, double dt, Py_ssize_t first) noexcept
