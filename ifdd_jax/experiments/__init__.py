"""Studies made of many training runs, each a module and a command:

    python -m ifdd_jax.experiments.dilution   test UAR of several models against the length of the
                                              synthetic set's expression event (seeds × levels)

A study starts the normal main job (`python -m ifdd_jax.main`) once per cell in a fresh process,
so cells share nothing but the data they are meant to share, and reruns resume.
"""
