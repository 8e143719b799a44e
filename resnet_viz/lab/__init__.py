"""The Lab: the experiments the literature uses to explain residual networks, for any network built or trained
here. Gradients at initialisation, training curves plain vs residual, layer responses, the lesion study, the
effective receptive field and the loss landscape; ``run_study`` runs any of them, for the command line and the
app alike."""

from .studies import DEPTH_PAIRS, STUDIES, LabReport, LabSettings, Study, run_study

__all__ = ["DEPTH_PAIRS", "STUDIES", "LabReport", "LabSettings", "Study", "run_study"]
