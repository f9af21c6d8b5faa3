//! Offline store checker (`logstorfs fsck`): being written; see issue 6.
