"""Analysis figures of trained runs, each a module and a command writing PNG files:

    python -m ifdd_jax.analysis.gradcam      Grad-CAM of Y_S and Y_D over a clip's frames
    python -m ifdd_jax.analysis.tsne         t-SNE of the features before the last Linear
    python -m ifdd_jax.analysis.issm_indices where ISSM's static/dynamic indices fall in time
    python -m ifdd_jax.analysis.efficiency   params and GFLOPs of every model (Table 12 form)
    python -m ifdd_jax.analysis.curves       loss / UAR / WAR from TensorBoard events

Figures are plain matplotlib (Agg backend), labelled for a paper and saved at `figures.DPI`
unless `--dpi` says otherwise.
"""
