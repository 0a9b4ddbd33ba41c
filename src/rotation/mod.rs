//! Rotation reminders: the parameter-age check, its schedule, and what was sent.

pub mod schedule;
