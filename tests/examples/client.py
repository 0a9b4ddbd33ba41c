"""Print an SP-API access token from lwa-agent with httpx (pip install httpx)."""
import os

import httpx

SOCKET = os.environ.get("LWA_AGENT_SOCKET", "/run/lwa-agent/lwa-agent.sock")

with httpx.Client(transport=httpx.HTTPTransport(uds=SOCKET)) as client:
    answer = client.get("http://localhost/v1/token")
    answer.raise_for_status()
    token = answer.json()
    # Send it as the x-amz-access-token header of every SP-API call.
    print(token["access_token"])
