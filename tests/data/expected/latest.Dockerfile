# nexus-sandbox-latest: layers base@1, fuse@1, nexus@0.9.26
FROM e2bdev/code-interpreter:latest
USER root
RUN id -u user >/dev/null 2>&1 || useradd -m -s /bin/bash user
WORKDIR /home/user
RUN apt-get update && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y fuse libfuse2 libfuse-dev
COPY --chown=root requirements/fuse-72a5665cc83f.txt /opt/e2b-matrix/requirements/fuse-72a5665cc83f.txt
RUN pip install --require-hashes --no-deps -r /opt/e2b-matrix/requirements/fuse-72a5665cc83f.txt && pip check
RUN touch /etc/fuse.conf && (grep -q '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf)
RUN echo 'user ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/user && chmod 0440 /etc/sudoers.d/user
RUN mkdir -p /home/user/nexus /mnt/nexus && chown user:user /home/user/nexus /mnt/nexus
COPY --chown=root requirements/nexus-79acf6396965.txt /opt/e2b-matrix/requirements/nexus-79acf6396965.txt
RUN pip install --require-hashes --no-deps -r /opt/e2b-matrix/requirements/nexus-79acf6396965.txt && pip check
USER user
