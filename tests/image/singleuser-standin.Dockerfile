# A LOCAL STAND-IN for quay.io/jupyterhub/k8s-singleuser-sample:<hub_version>, the default
# base of the generated user-image/Dockerfile (build_user_image=yes), which the test machines
# cannot pull. Built by tests/test_image.py with buildah, offline but for the package index,
# on the k8s-hub stand-in (build_standin_base.sh), and stored under the real image's name.
#
# What the real image is (Zero to JupyterHub, images/singleuser-sample/Dockerfile):
# python:3.12-slim-bookworm + `adduser --uid 1000 jovyan` (home /home/jovyan) + apt tini,
# git, ... + its pinned requirements (jupyterhub, jupyterlab, nbgitpuller, ...) installed by
# pip as root into /usr/local; WORKDIR /home/jovyan, USER jovyan (by name), EXPOSE 8888,
# ENTRYPOINT ["tini", "--"], CMD ["jupyter", "lab"].
#
# What the stand-in differs in: Debian's python3 (3.11) with the k8s-hub stand-in's hub
# packages under it, and only JupyterLab (and what it pulls in) added.
ARG HUB_STANDIN
FROM ${HUB_STANDIN}
ARG JUPYTERLAB_VERSION
USER root
RUN pip install --no-cache-dir "jupyterlab==${JUPYTERLAB_VERSION}"
WORKDIR /home/jovyan
USER jovyan
EXPOSE 8888
ENTRYPOINT ["tini", "--"]
CMD ["jupyter", "lab"]
LABEL k8s-singleuser-sample-standin="true" \
      org.opencontainers.image.title="k8s-singleuser-sample (local stand-in)"
