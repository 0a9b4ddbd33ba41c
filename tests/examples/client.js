// Print an SP-API access token from lwa-agent with Node.js (no dependencies).
const http = require("node:http");

const socketPath = process.env.LWA_AGENT_SOCKET || "/run/lwa-agent/lwa-agent.sock";

http.get({ socketPath, path: "/v1/token" }, (res) => {
  let body = "";
  res.setEncoding("utf8");
  res.on("data", (chunk) => (body += chunk));
  res.on("end", () => {
    if (res.statusCode !== 200) {
      console.error(`lwa-agent answered ${res.statusCode}: ${body}`);
      process.exit(1);
    }
    console.log(JSON.parse(body).access_token);
  });
}).on("error", (err) => {
  console.error(`cannot reach lwa-agent at ${socketPath}: ${err.message}`);
  process.exit(1);
});
