// Print an SP-API access token from lwa-agent with Java 16+ (Unix domain sockets in NIO).
// Run: java Client.java
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.io.ByteArrayOutputStream;

public class Client {
    public static void main(String[] args) throws Exception {
        String socket = System.getenv().getOrDefault("LWA_AGENT_SOCKET", "/run/lwa-agent/lwa-agent.sock");
        try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(socket))) {
            String request = "GET /v1/token HTTP/1.1\r\nHost: localhost\r\n"
                + "Accept: text/plain\r\nConnection: close\r\n\r\n";
            ch.write(ByteBuffer.wrap(request.getBytes(StandardCharsets.US_ASCII)));
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteBuffer buf = ByteBuffer.allocate(4096);
            while (ch.read(buf) > 0) {
                out.write(buf.array(), 0, buf.position());
                buf.clear();
            }
            String response = out.toString(StandardCharsets.UTF_8);
            String status = response.substring(0, response.indexOf("\r\n"));
            String body = response.substring(response.indexOf("\r\n\r\n") + 4);
            if (!status.contains(" 200 ")) {
                System.err.println("lwa-agent answered " + status + ": " + body);
                System.exit(1);
            }
            System.out.print(body);
        }
    }
}
