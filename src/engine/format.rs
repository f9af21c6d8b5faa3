//! On-disk format. Every byte that reaches disk is encoded and decoded here.
pub const BUFFER_HEADER_SIZE: usize = 64;
pub const RECORD_HEADER_SIZE: usize = 24;
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 20;
pub const DEFAULT_SEGMENTS_PER_FILE: u32 = 32;
