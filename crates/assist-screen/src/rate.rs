//! The adaptive frame rate: how often the sharer captures and sends its screen.
//!
//! It starts at [`FrameRate::START_FPS`] frames per second. Each `keyframeRequest` with reason
//! `congestion` (the relay dropped screen frames because the helper reads too slowly) halves the rate, down
//! to [`FrameRate::MIN_FPS`]. Every [`FrameRate::RAISE_AFTER_MS`] without congestion raises it by one frame
//! per second, up to [`FrameRate::MAX_FPS`]. Time is passed in as milliseconds from any fixed origin.

/// The frame-rate controller. See the module documentation.
#[derive(Debug, Clone)]
pub struct FrameRate {
    fps: u32,
    /// When the rate last changed (or congestion was last seen, or the rate reached its maximum).
    calm_since_ms: u64,
    /// When the last capture started, if any.
    last_capture_ms: Option<u64>,
}

impl FrameRate {
    /// Frames per second at the start.
    pub const START_FPS: u32 = 10;
    /// The highest rate.
    pub const MAX_FPS: u32 = 15;
    /// The lowest rate.
    pub const MIN_FPS: u32 = 1;
    /// Congestion-free time after which the rate goes up by one.
    pub const RAISE_AFTER_MS: u64 = 2000;

    /// A controller at [`FrameRate::START_FPS`], with the first capture due at once.
    pub fn new(now_ms: u64) -> FrameRate {
        FrameRate {
            fps: Self::START_FPS,
            calm_since_ms: now_ms,
            last_capture_ms: None,
        }
    }

    /// The current rate in frames per second, after applying the raises due by `now_ms`.
    pub fn fps(&mut self, now_ms: u64) -> u32 {
        self.catch_up(now_ms);
        self.fps
    }

    /// The relay sent `keyframeRequest` with `reason`. `congestion` halves the rate; other reasons
    /// (`dropped`) only ask for a keyframe, which is the caller's business.
    pub fn keyframe_requested(&mut self, reason: &str, now_ms: u64) {
        if reason == "congestion" {
            self.catch_up(now_ms);
            self.fps = (self.fps / 2).max(Self::MIN_FPS);
            self.calm_since_ms = now_ms;
        }
    }

    /// A capture started at `now_ms`.
    pub fn capture_started(&mut self, now_ms: u64) {
        self.catch_up(now_ms);
        self.last_capture_ms = Some(now_ms);
    }

    /// When the next capture is due: one frame interval after the last one started, or at once if none has.
    pub fn next_deadline_ms(&mut self, now_ms: u64) -> u64 {
        self.catch_up(now_ms);
        match self.last_capture_ms {
            None => now_ms,
            Some(t) => t + self.interval_ms(),
        }
    }

    /// The time between two captures at the current rate, in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        1000 / u64::from(self.fps.max(1))
    }

    fn catch_up(&mut self, now_ms: u64) {
        if self.fps >= Self::MAX_FPS {
            // Calm time at the maximum does not bank raises for after the next congestion.
            self.calm_since_ms = self.calm_since_ms.max(now_ms);
            return;
        }
        let steps = now_ms.saturating_sub(self.calm_since_ms) / Self::RAISE_AFTER_MS;
        if steps == 0 {
            return;
        }
        let room = u64::from(Self::MAX_FPS - self.fps);
        let raise = steps.min(room);
        // raise <= room <= MAX_FPS, so it fits in u32.
        self.fps += raise as u32;
        self.calm_since_ms += raise * Self::RAISE_AFTER_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_ten_and_captures_at_once() {
        let mut r = FrameRate::new(1000);
        assert_eq!(r.fps(1000), 10);
        assert_eq!(r.next_deadline_ms(1000), 1000);
        r.capture_started(1000);
        assert_eq!(r.next_deadline_ms(1000), 1100);
    }

    #[test]
    fn congestion_halves_down_to_one() {
        let mut r = FrameRate::new(0);
        r.keyframe_requested("congestion", 10);
        assert_eq!(r.fps(10), 5);
        r.keyframe_requested("dropped", 20);
        assert_eq!(r.fps(20), 5);
        for _ in 0..5 {
            r.keyframe_requested("congestion", 30);
        }
        assert_eq!(r.fps(30), 1);
        r.capture_started(30);
        assert_eq!(r.next_deadline_ms(30), 1030);
    }

    #[test]
    fn calm_raises_one_per_two_seconds_up_to_fifteen() {
        let mut r = FrameRate::new(0);
        assert_eq!(r.fps(1999), 10);
        assert_eq!(r.fps(2000), 11);
        assert_eq!(r.fps(7999), 13);
        assert_eq!(r.fps(60_000), 15);
        // At the maximum, calm time is not banked: congestion then two seconds gives exactly one raise.
        r.keyframe_requested("congestion", 60_000);
        assert_eq!(r.fps(60_000), 7);
        assert_eq!(r.fps(61_999), 7);
        assert_eq!(r.fps(62_000), 8);
        // Congestion restarts the calm period.
        r.keyframe_requested("congestion", 63_000);
        assert_eq!(r.fps(64_999), 4);
        assert_eq!(r.fps(65_000), 5);
    }
}
