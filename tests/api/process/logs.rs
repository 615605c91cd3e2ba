//! The log the real binary writes.
