# C declarations for _kernel.py (Cython pure-Python mode). Keep in step with the .py: every function and
# attribute declared here must exist there with the same name and arity.
cimport cython

cdef int R_CONFIG, R_CELL_VOLTAGE_HIGH, R_CELL_VOLTAGE_LOW, R_CELL_OVERVOLTAGE, R_CELL_UNDERVOLTAGE
cdef int R_TEMPERATURE_HIGH, R_TEMPERATURE_LOW, R_OVERTEMPERATURE, R_UNDERTEMPERATURE, R_COLD_CHARGE
cdef int R_OVERCURRENT, R_FAULT, R_COMM_LOST, R_RECOVERY
cdef int A_OV, A_UV, A_OT, A_UT, A_CUT, A_OCC, A_ODC, A_BMS
cdef int WARNING, ALARM, FAULT
cdef long long F_BMS_FAULT, F_ALARM_CELL_OV, F_ALARM_CELL_UV, F_ALARM_OVERTEMP, F_ALARM_UNDERTEMP
cdef long long F_ALARM_CHARGE_OC, F_ALARM_DISCHARGE_OC, F_ALARM_SHORT_CIRCUIT, F_ALARM_INTERNAL
cdef Py_ssize_t L_OV_WARN, L_OV_ALARM, L_UV_WARN, L_UV_ALARM, L_OTC_WARN, L_OTC_ALARM, L_OTD_WARN
cdef Py_ssize_t L_OTD_ALARM, L_UTD_WARN, L_UTD_ALARM, L_CUT_WARN, L_CUT_ALARM, L_OCC, L_ODC, L_FLAGS0
cdef Py_ssize_t N_LATCH, MASK_MAX_CELLS
cdef double MAX_GAP_S, MAX_RAMP_DT_S, OCV_TOL_V, OCV_BLEND_TAU_S, BAL_WINDOW_V, BAL_DELTA_V
cdef double TIME_EPS, UNSET, UNSET_BELOW

@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cpdef double interp(double x, double[::1] xs, double[::1] ys, Py_ssize_t n) noexcept

cpdef double derate_high(double x, double start, double end) noexcept
cpdef double derate_low(double x, double end, double start) noexcept


@cython.final
cdef class Kernel:
    # sizes
    cdef readonly Py_ssize_t n_packs, n_cells, n_sens, n_ocv, mask_cells
    # parameters
    cdef readonly double v_max_alarm, v_max_warn, v_min_warn, v_min_alarm, v_hyst
    cdef readonly double chg_t_min, chg_t_max, dis_t_min, dis_t_max, t_margin, t_hyst
    cdef readonly double max_chg, max_dis, oc_factor, oc_time, debounce
    cdef readonly double chg_v, dis_v, rest_i, rest_time, ramp_s
    # tables
    cdef readonly double[::1] ocv_soc, ocv_v
    cdef readonly int[::1] cell_off, sens_off
    cdef readonly double[::1] cap_ah, r0
    cdef int[::1] lat_level, lat_zero_c, lat_zero_d, lat_reason
    cdef long long[::1] lat_flag
    # inputs, written by the caller before step()
    cdef readonly double[::1] cell_v, cell_t, s_t, cur
    cdef readonly int[::1] online
    cdef readonly long long[::1] flags
    # per-cell state
    cdef readonly double[::1] soc
    cdef readonly int[::1] bal
    # per-pack state and outputs
    cdef readonly int[::1] seen, soc_known, prev_on, fresh, pending
    cdef readonly double[::1] last_t, last_i, rest_since
    cdef readonly double[::1] soc_pack, vmin, vmax, tmin, tmax, excess, ccl_p, dcl_p
    cdef readonly int[::1] ccl_r, dcl_r, contactor
    cdef readonly long long[::1] mask
    # latches, pack-major (N_LATCH per pack)
    cdef readonly int[::1] lat_on
    cdef readonly double[::1] lat_since, lat_pend
    # system outputs
    cdef readonly double soc_sys, ccl, dcl, cvl, dvl, comm_lost_since, t_prev
    cdef readonly int ccl_reason, dcl_reason, cvl_reason, dvl_reason, n_online, have_data, comm_lost
    cdef readonly long long alarm_version

    cpdef void set_pack(self, Py_ssize_t p, int online, double t, double current, long long flags, int fresh)

    @cython.locals(p=Py_ssize_t, k=Py_ssize_t, n_online=int)
    cpdef void step(self, double t)

    @cython.locals(
        cv="double[::1]", soc="double[::1]",
        c0=Py_ssize_t, c1=Py_ssize_t, s0=Py_ssize_t, s1=Py_ssize_t, c=Py_ssize_t, s=Py_ssize_t,
        j=Py_ssize_t, k=Py_ssize_t,
        cur=double, st=double, vmin=double, vmax=double, excess=double, v=double, tmin=double,
        tmax=double, x=double, ir=double, dt=double, dsoc=double, smin=double, smax=double, den=double,
        bal_from=double, vh=double, th=double, db=double, warn=double, lim=double,
        has_t=bint, resting=bint, bal_ok=bint, small=bint, charging=bint, on=bint, pend=bint,
        mask="long long", one="long long", flags="long long",
        zc=int, zc_level=int, zd=int, zd_level=int, fault=int, level=int, reason=int,
    )
    cdef void _pack(self, Py_ssize_t p, double t) noexcept

    @cython.locals(c=Py_ssize_t, v=double, lo=double, hi=double, x=double)
    cdef void _rest_correct(self, Py_ssize_t c0, Py_ssize_t c1, double w) noexcept

    cdef bint _latch(self, Py_ssize_t j, double t, bint on, bint off, double delay_on) noexcept

    @cython.locals(p=Py_ssize_t, wsum=double, csum=double)
    cdef void _system_soc(self, int all_packs) noexcept

    @cython.locals(
        p=Py_ssize_t, first=Py_ssize_t, n=Py_ssize_t,
        dt=double, ccl=double, dcl=double, cap=double, excess=double, cvl=double, dvl=double,
        ccl_r=int, dcl_r=int, cvl_r=int,
    )
    cdef void _system(self, double t, int n_online) noexcept
