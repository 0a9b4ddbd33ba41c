#!/bin/sh
# Print an SP-API access token from lwa-agent with curl (7.40+).
SOCKET=${LWA_AGENT_SOCKET:-/run/lwa-agent/lwa-agent.sock}
exec curl --fail --silent --show-error --unix-socket "$SOCKET" \
  -H 'Accept: text/plain' http://localhost/v1/token
