"""orpo-deploy: a preference dataset to an aligned, quantised, served and load-tested model.

The repository root is this package (pyproject's ``package-dir``): ``train/`` installs as ``orpo_deploy.train``,
``serve/`` as ``orpo_deploy.serve``, and so on.
"""

__version__ = "0.1.0"
