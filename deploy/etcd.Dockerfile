# The etcd of the compose example: Debian's etcd-server, the same release the test suite runs against.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 2379
ENTRYPOINT ["/usr/bin/etcd", "--data-dir=/var/lib/etcd", "--listen-client-urls=http://0.0.0.0:2379", \
            "--advertise-client-urls=http://etcd:2379", "--enable-v2"]
