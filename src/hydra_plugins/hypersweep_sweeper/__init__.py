"""The `hypersweep` Hydra sweeper (see sweeper.py). Hydra imports every module here when it
scans for plugins, re-executing them; shared logic and exception types live in the hypersweep
package so that their identity is stable."""
