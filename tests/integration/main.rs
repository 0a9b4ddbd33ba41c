//! Integration tests: the real `lwa-agent` binary against a real moto_server and the LWA
//! test endpoint, over its real Unix socket. One test binary, so the AWS SDK links once.

mod harness;

mod auto_rotation;
mod aws_template;
mod config_cli;
mod credentials;
mod examples;
mod failures;
mod footprint;
mod lifecycle;
mod packaging;
mod peers;
mod requests;
mod roles_anywhere;
mod rotation;
mod setup;
mod status;
mod tokens;
