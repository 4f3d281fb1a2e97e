# nginx on the local Debian base (debootstrap includes Debian's nginx-light),
# run in the foreground as the official image does.
ARG BASE
FROM ${BASE}
CMD ["nginx", "-g", "daemon off;"]
