# Varnish 7 between the edge and the origin (docs/hops.md). Start it with
# `-p pipe_timeout=3600` (or longer than any call may stay silent): a pipe
# with no byte either way for pipe_timeout (60 s) is closed, and the call
# with it, with no status.
vcl 4.1;

backend origin {
    .host = "@UPSTREAM_HOST@";
    .port = "@UPSTREAM_PORT@";
}

sub vcl_recv {
    # gRPC: Varnish's own HTTP handling reads a request body before it
    # forwards it and answers 503 when the upstream's first byte is late
    # (first_byte_timeout), so a full-duplex call, whose server waits for
    # the client's next message, ends UNAVAILABLE. `pipe` hands the
    # connection to the origin as a byte stream for as long as it lasts;
    # gRPC-web is never cacheable anyway.
    if (req.http.content-type ~ "^application/grpc-web") {
        return (pipe);
    }
}
