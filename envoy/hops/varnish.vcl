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
    # gRPC: through Varnish's own HTTP handling a full-duplex call, whose
    # client waits for a reply before it sends more, ends UNAVAILABLE (503)
    # after 5 s. `pipe` hands the connection to the origin as a byte
    # stream for as long as it lasts; gRPC-web is never cacheable anyway.
    if (req.http.content-type ~ "^application/grpc-web") {
        return (pipe);
    }
}
