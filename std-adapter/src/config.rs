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

/// The configuration every allocation reads, in one word: bits 0-1 the
/// backtrace mode (1 none, 2 short, 3 full), bit 2 unwinding, bit 3 paused,
/// and bits 4-7 the allocation path those and the form choose (its
/// [`Route`]), so that an allocation reads one word and takes one branch to
/// its path. [`UNSET`](Self::UNSET) until the first allocator call, which
/// stores the wrapper's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Config(u8);

/// The allocation path of a [`Config`], one per form and mode: chosen when
/// the configuration changes rather than on every allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Route(u8);

impl Route {
    pub(crate) const EXACT_OFF: Route = Route(1 << 4);
    pub(crate) const EXACT_TASKS: Route = Route(2 << 4);
    pub(crate) const EXACT_CALLSITES: Route = Route(3 << 4);
    pub(crate) const EXACT_UNWIND: Route = Route(4 << 4);
    /// The sampling form's paths have this bit, which frees test.
    const SAMPLED: u8 = 8 << 4;
    pub(crate) const SAMPLED_OFF: Route = Route(Self::SAMPLED | Self::EXACT_OFF.0);
    pub(crate) const SAMPLED_TASKS: Route = Route(Self::SAMPLED | Self::EXACT_TASKS.0);
    pub(crate) const SAMPLED_CALLSITES: Route = Route(Self::SAMPLED | Self::EXACT_CALLSITES.0);
    pub(crate) const SAMPLED_UNWIND: Route = Route(Self::SAMPLED | Self::EXACT_UNWIND.0);
}

const _: () = assert!(
    Route::SAMPLED_TASKS.0 < Route::SAMPLED_CALLSITES.0
        && Route::SAMPLED_CALLSITES.0 < Route::SAMPLED_UNWIND.0
        && Route::SAMPLED_UNWIND.0 < Config::ROUTE
        && Route::SAMPLED_OFF.0 | !Config::ROUTE < Route::SAMPLED_TASKS.0
        && Route::EXACT_UNWIND.0 < Route::SAMPLED_OFF.0
        && Route::SAMPLED_TASKS.0 & !Config::ROUTE == 0,
    "the paths that count down are the highest routes"
);

impl Config {
    /// Before the first allocator call.
    pub(crate) const UNSET: Config = Config(0);
    const MODE: u8 = 0b11;
    const UNWIND: u8 = 0b100;
    const PAUSED: u8 = 0b1000;
    const ROUTE: u8 = 0xf0;

    /// A wrapper's configuration, not yet routed.
    pub(crate) const fn new(mode: BacktraceMode, capture: Capture) -> Config {
        let mode = match mode {
            BacktraceMode::None => 1,
            BacktraceMode::Short => 2,
            BacktraceMode::Full => 3,
        };
        Config(mode).with_capture(capture)
    }

    /// This configuration, capturing as `capture` says.
    pub(crate) const fn with_capture(self, capture: Capture) -> Config {
        match capture {
            Capture::FramePointers => Config(self.0 & !Self::UNWIND),
            #[cfg(all(feature = "backtrace", unix))]
            Capture::Unwind => Config(self.0 | Self::UNWIND),
        }
    }

    /// This configuration with the backtrace mode `mode` (captured by
    /// frame pointers, as `set_backtrace_mode` sets it), routed again.
    fn with_backtrace_mode(self, mode: BacktraceMode) -> Config {
        let config = Config(self.0 & !Self::MODE | Config::new(mode, Capture::FramePointers).0);
        config.routed(self.sampled())
    }

    /// This configuration paused (or resumed), routed again.
    fn paused(self, paused: bool) -> Config {
        let config = if paused {
            Config(self.0 | Self::PAUSED)
        } else {
            Config(self.0 & !Self::PAUSED)
        };
        config.routed(self.sampled())
    }

    /// The path this configuration routes to.
    #[inline(always)]
    pub(crate) const fn route(self) -> Route {
        Route(self.0 & Self::ROUTE)
    }

    /// Whether the route is a path of the sampling form.
    #[inline(always)]
    pub(crate) const fn sampled(self) -> bool {
        self.0 & Route::SAMPLED != 0
    }

    /// Whether the route is a path of the sampling form that records,
    /// whose unsampled allocations only count down: the route is the high
    /// nibble, and those paths are the highest, so one comparison of the
    /// whole word tells.
    #[inline(always)]
    pub(crate) const fn counts_down(self) -> bool {
        self.0 >= Route::SAMPLED_TASKS.0
    }

    /// Whether callsites are captured by unwinding.
    #[inline(always)]
    pub(crate) const fn unwinds(self) -> bool {
        self.0 & Self::UNWIND != 0
    }

    /// What this configuration records: nothing while paused, else threads
    /// only or callsites too, as its backtrace mode says.
    pub(crate) const fn mode(self) -> Mode {
        if self.0 & Self::PAUSED != 0 {
            return Mode::Off;
        }
        match self.0 & Self::MODE {
            2 | 3 => Mode::TasksAndCallsites,
            _ => Mode::Tasks,
        }
    }

    /// The backtrace mode this configuration names.
    fn backtrace_mode(self) -> BacktraceMode {
        match self.0 & Self::MODE {
            2 => BacktraceMode::Short,
            3 => BacktraceMode::Full,
            _ => BacktraceMode::None,
        }
    }

    /// This configuration with the path its mode and the form (the sampling
    /// form when `sampled`) choose.
    pub(crate) fn routed(self, sampled: bool) -> Config {
        let route = match (sampled, self.mode()) {
            (false, Mode::Off) => Route::EXACT_OFF,
            (false, Mode::Tasks) => Route::EXACT_TASKS,
            (false, Mode::TasksAndCallsites) if self.unwinds() => Route::EXACT_UNWIND,
            (false, Mode::TasksAndCallsites) => Route::EXACT_CALLSITES,
            (true, Mode::Off) => Route::SAMPLED_OFF,
            (true, Mode::Tasks) => Route::SAMPLED_TASKS,
            (true, Mode::TasksAndCallsites) if self.unwinds() => Route::SAMPLED_UNWIND,
            (true, Mode::TasksAndCallsites) => Route::SAMPLED_CALLSITES,
        };
        Config(self.0 & !Self::ROUTE | route.0)
    }

    /// Where the callsite capture starts: the frame pointer of the
    /// tracker's out-of-line function that the allocating call reached
    /// (`alloc_routed` or `realloc`) for a walk, or its stack pointer for
    /// the unwinder, which skips every frame at or below it (the tracker's
    /// own).
    #[inline(always)]
    pub(crate) fn frame(self, frame_pointer: usize) -> usize {
        if self.unwinds() {
            alloc_track_core::stack_pointer()
        } else {
            frame_pointer
        }
    }
}

/// The process's [`Config`], as an atomic word.
pub(crate) struct ConfigCell(AtomicU8);

impl ConfigCell {
    /// The configuration in force.
    #[inline(always)]
    pub(crate) fn load(&self) -> Config {
        Config(self.0.load(Relaxed))
    }

    /// Sets the first configuration, unless one is set: the one in force
    /// then is the error.
    pub(crate) fn set_first(&self, config: Config) -> Result<(), Config> {
        self.0
            .compare_exchange(Config::UNSET.0, config.0, Relaxed, Relaxed)
            .map(|_| ())
            .map_err(Config)
    }

    /// Changes the configuration once it is set.
    fn update(&self, change: impl Fn(Config) -> Config) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |config| {
            (config != Config::UNSET.0).then(|| change(Config(config)).0)
        });
    }
}

/// The process's configuration.
pub(crate) static CONFIG: ConfigCell = ConfigCell(AtomicU8::new(Config::UNSET.0));

// The size from which every sampling allocation goes out of line, where a
// refusal is seen (see `alloc_inline`): the core's countdown piece.
const _: () = assert!(
    alloc_track_core::raw::COUNTDOWN_PIECE == 64 * 1024,
    "`with_sampling`'s docs give the size as 64 KiB"
);

/// Whether callsites are captured by unwinding, for the context.
#[inline]
pub(crate) fn capture_unwinds() -> bool {
    CONFIG.load().unwinds()
}

/// The backtrace mode in force: the one the global allocator was made with,
/// or the last one [`set_backtrace_mode`] set; `None` before the allocator's
/// first call.
pub fn backtrace_mode() -> BacktraceMode {
    CONFIG.load().backtrace_mode()
}

/// Changes what is recorded from now on, whatever `AllocTrack::new` said:
/// `None` for threads only, `Short` or `Full` for callsites too. Takes
/// effect once the allocator has been called (any program has by `main`).
pub fn set_backtrace_mode(mode: BacktraceMode) {
    CONFIG.update(|config| config.with_backtrace_mode(mode));
}

/// Pauses (or resumes) recording. Blocks allocated while paused are never
/// counted; blocks allocated before are still credited when freed.
pub fn set_tracking(enabled: bool) {
    CONFIG.update(|config| config.paused(!enabled));
}
