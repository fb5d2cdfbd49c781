//! The process's configuration, in one word that every allocation reads:
//! the backtrace mode, how stacks are captured, whether tracking is paused,
//! and the path (the route) an allocation takes.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use alloc_track_core::Mode;

/// What callsite information to keep, and how reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BacktraceMode {
    /// Per-thread figures only.
    #[default]
    None,
    /// Per-callsite figures too; reports hide the allocator's, the tracker's
    /// and the runtime's frames.
    Short,
    /// Per-callsite figures too; reports show every frame.
    Full,
}

/// How callsites are captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Capture {
    /// Walk the frame-pointer chain: tens of nanoseconds. Needs
    /// `-C force-frame-pointers=yes`. Code built without frame pointers gives
    /// shorter stacks (the walk stops where the chain breaks), never a fault.
    #[default]
    FramePointers,
    /// Unwind with the platform unwinder (the `backtrace` crate): works
    /// without frame pointers, at microseconds per allocation. Exists only
    /// on Unix targets with the `backtrace` feature, where the unwinder may
    /// be called from any thread at once; elsewhere, naming it is a compile
    /// error rather than a capture that silently records nothing.
    #[cfg(all(feature = "backtrace", unix))]
    Unwind,
}

/// Encodes what is tracked: bits 0-1 the backtrace mode (1 none, 2 short, 3
/// full), bit 2 unwinding, bit 3 paused, and bits 4-7 the allocation path
/// those and the form choose (see [`route`]), so that an allocation reads
/// one word and takes one branch to its path. `UNSET` until the first
/// allocator call, which stores the wrapper's configuration.
pub(crate) static CONFIG: AtomicU8 = AtomicU8::new(UNSET);

// The size from which every sampling allocation goes out of line, where a
// refusal is seen (see `alloc_inline`): the core's countdown piece.
const _: () = assert!(
    alloc_track_core::raw::COUNTDOWN_PIECE == 64 * 1024,
    "`with_sampling`'s docs give the size as 64 KiB"
);
pub(crate) const UNSET: u8 = 0;
pub(crate) const UNWIND_BIT: u8 = 0b100;
pub(crate) const PAUSED_BIT: u8 = 0b1000;
pub(crate) const ROUTE: u8 = 0xf0;

/// The allocation paths, one per form and mode, in bits 4-7 of the
/// configuration: chosen when the configuration changes rather than on
/// every allocation.
pub(crate) mod route {
    pub(crate) const EXACT_OFF: u8 = 1 << 4;
    pub(crate) const EXACT_TASKS: u8 = 2 << 4;
    pub(crate) const EXACT_CALLSITES: u8 = 3 << 4;
    pub(crate) const EXACT_UNWIND: u8 = 4 << 4;
    /// The sampling form's paths have this bit, which frees test.
    pub(crate) const SAMPLED: u8 = 8 << 4;
    pub(crate) const SAMPLED_OFF: u8 = SAMPLED | EXACT_OFF;
    pub(crate) const SAMPLED_TASKS: u8 = SAMPLED | EXACT_TASKS;
    pub(crate) const SAMPLED_CALLSITES: u8 = SAMPLED | EXACT_CALLSITES;
    pub(crate) const SAMPLED_UNWIND: u8 = SAMPLED | EXACT_UNWIND;

    /// Whether `config` names a path of the sampling form.
    #[inline(always)]
    pub(crate) const fn sampled(config: u8) -> bool {
        config & SAMPLED != 0
    }

    /// Whether `config` names a path of the sampling form that records,
    /// whose unsampled allocations only count down: the route is the high
    /// nibble, and those paths are the highest, so one comparison of the
    /// whole word tells.
    #[inline(always)]
    pub(crate) const fn counts_down(config: u8) -> bool {
        config >= SAMPLED_TASKS
    }

    const _: () = assert!(
        SAMPLED_TASKS < SAMPLED_CALLSITES
            && SAMPLED_CALLSITES < SAMPLED_UNWIND
            && SAMPLED_UNWIND < super::ROUTE
            && SAMPLED_OFF | !super::ROUTE < SAMPLED_TASKS
            && EXACT_UNWIND < SAMPLED_OFF
            && SAMPLED_TASKS & !super::ROUTE == 0,
        "the paths that count down are the highest routes"
    );
}

pub(crate) const fn encode(mode: BacktraceMode, capture: Capture) -> u8 {
    let mode = match mode {
        BacktraceMode::None => 1,
        BacktraceMode::Short => 2,
        BacktraceMode::Full => 3,
    };
    match capture {
        Capture::FramePointers => mode,
        #[cfg(all(feature = "backtrace", unix))]
        Capture::Unwind => mode | UNWIND_BIT,
    }
}

/// What `config` records: nothing while paused, else threads only or
/// callsites too, as its backtrace mode says.
pub(crate) const fn mode_of(config: u8) -> Mode {
    if config & PAUSED_BIT != 0 {
        return Mode::Off;
    }
    match config & 0b11 {
        2 | 3 => Mode::TasksAndCallsites,
        _ => Mode::Tasks,
    }
}

/// `config` with the path its mode and the form (the sampling form when
/// `sampled`) choose.
pub(crate) fn routed(config: u8, sampled: bool) -> u8 {
    let unwinds = config & UNWIND_BIT != 0;
    let route = match (sampled, mode_of(config)) {
        (false, Mode::Off) => route::EXACT_OFF,
        (false, Mode::Tasks) => route::EXACT_TASKS,
        (false, Mode::TasksAndCallsites) if unwinds => route::EXACT_UNWIND,
        (false, Mode::TasksAndCallsites) => route::EXACT_CALLSITES,
        (true, Mode::Off) => route::SAMPLED_OFF,
        (true, Mode::Tasks) => route::SAMPLED_TASKS,
        (true, Mode::TasksAndCallsites) if unwinds => route::SAMPLED_UNWIND,
        (true, Mode::TasksAndCallsites) => route::SAMPLED_CALLSITES,
    };
    config & !ROUTE | route
}

/// Where the callsite capture starts: the frame pointer of the tracker's
/// out-of-line function that the allocating call reached (`alloc_routed` or
/// `realloc`) for a walk, or its stack pointer for the unwinder, which skips
/// every frame at or below it (the tracker's own).
#[inline(always)]
pub(crate) fn frame_of(config: u8, frame_pointer: usize) -> usize {
    if config & UNWIND_BIT != 0 {
        alloc_track_core::stack_pointer()
    } else {
        frame_pointer
    }
}

/// Whether callsites are captured by unwinding, for the context.
#[inline]
pub(crate) fn capture_unwinds() -> bool {
    CONFIG.load(Relaxed) & UNWIND_BIT != 0
}

/// The backtrace mode in force: the one the global allocator was made with,
/// or the last one [`set_backtrace_mode`] set; `None` before the allocator's
/// first call.
pub fn backtrace_mode() -> BacktraceMode {
    match CONFIG.load(Relaxed) & 0b11 {
        2 => BacktraceMode::Short,
        3 => BacktraceMode::Full,
        _ => BacktraceMode::None,
    }
}

/// Changes what is recorded from now on, whatever `AllocTrack::new` said:
/// `None` for threads only, `Short` or `Full` for callsites too. Takes
/// effect once the allocator has been called (any program has by `main`).
pub fn set_backtrace_mode(mode: BacktraceMode) {
    let _ = CONFIG.fetch_update(Relaxed, Relaxed, |config| {
        (config != UNSET).then(|| {
            routed(
                config & !0b11 | encode(mode, Capture::FramePointers),
                route::sampled(config),
            )
        })
    });
}

/// Pauses (or resumes) recording. Blocks allocated while paused are never
/// counted; blocks allocated before are still credited when freed.
pub fn set_tracking(enabled: bool) {
    let _ = CONFIG.fetch_update(Relaxed, Relaxed, |config| {
        let config = if enabled {
            config & !PAUSED_BIT
        } else {
            config | PAUSED_BIT
        };
        (config != UNSET).then(|| routed(config, route::sampled(config)))
    });
}
