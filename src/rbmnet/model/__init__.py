"""The trained-model contract: what a model folder holds and how a network is rebuilt and run from it.

Training writes model folders, inference, export and evaluation read them; none of them imports the
others for it. See docs/model_folder.md.
"""
