//! Offline namespace checker for `logstorfs fsck`: being written; see issue 6.
