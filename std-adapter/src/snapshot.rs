//! Snapshots of the figures at one moment, and what changed between two.
