//! The WildGuard judge end to end on the embedded model (added once the candle backend builds).
