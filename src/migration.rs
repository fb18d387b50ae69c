//! Migrating from Python's `socketserver`: every name, and where we differ on purpose.
#![doc = include_str!("migration.md")]
