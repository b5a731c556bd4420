# nexus-sandbox-latest: layers base@1, fuse@1, nexus@0.9.26
FROM e2bdev/code-interpreter:latest
USER root
RUN id -u user >/dev/null 2>&1 || useradd -m -s /bin/bash user
WORKDIR /home/user
RUN apt-get update && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y fuse libfuse2 libfuse-dev
RUN pip install fusepy
RUN touch /etc/fuse.conf && (grep -q '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf)
RUN echo 'user ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/user && chmod 0440 /etc/sudoers.d/user
RUN mkdir -p /home/user/nexus /mnt/nexus && chown user:user /home/user/nexus /mnt/nexus
RUN pip install nexus-ai-fs==0.9.26
USER user
