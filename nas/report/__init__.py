"""`nas report`: pictures of a search or retrain run directory.

One module per job, so each can be tested without the others and without drawing:

* `runs`: read a run directory, decide what kind of run it is, validate its files;
* `epochs`: the shared epoch axis (one global index across P-DARTS stages);
* `cells`: lay out and draw a cell (DARTS or NAS-Bench-201) as a graph;
* `arch_heatmaps`: architecture weights as matrices (pure) and heat maps;
* `curves`: loss / accuracy / entropy / latency over epochs;
* `plotting`: the matplotlib backend and atomic PNG writing;
* `build`: decide which pictures a run gets and write them.

Nothing here imports matplotlib until a picture is drawn (`plotting` does), so the CLI's
start-up and the pure helpers stay light.
"""
