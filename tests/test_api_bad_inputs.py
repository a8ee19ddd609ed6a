"""Every public callable of equiframe has bad-input tests (issue 16, item 4: exact or loud).

The public API is enumerated, not listed by hand: every module under ``equiframe`` (private ``_x`` modules
excepted), its ``__all__`` or else the functions and classes it defines. Each callable must be in
:data:`REGISTRY` as one of

* ``"here"``: its bad-input cases are in :data:`CASES` below (run by :func:`test_bad_input`);
* ``Elsewhere(tests...)``: bad-input tests in other files; checked to exist and to use the callable inside a
  ``pytest.raises`` block (or, for a class, in a test that has one);
* ``Exempt(kind, why)``: nothing to check, of a kind checked here: ``exception`` (an exception class),
  ``no-arguments`` (takes none), ``record`` (a dataclass / named tuple the library fills),
  ``cli`` (builds or checks the argument parser: covered by the command-line tests, see
  :func:`test_every_cli_command_has_mistake_tests`).

A new public function without an entry fails :func:`test_registry_covers_the_public_api`.

A case is ``(exception, regex, thunk)``: the thunk (called with a temporary directory) must raise the
exception with a message matching the regex -- which names the argument -- or, for ``OK``, return a value
the case's ``check`` accepts (bad-looking input with a right answer).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv

import equiframe

TESTS = Path(__file__).resolve().parent

#: modules left out of the registry for now, and why (none today)
EXCLUDED_MODULES: dict[str, str] = {}


# ------------------------------------------------------------------------------------------ enumeration
def public_api() -> dict[str, Any]:
    """``{"module.qualname": object}`` of every public function and class (re-exports counted once)."""
    out: dict[str, Any] = {}
    for info in pkgutil.walk_packages(equiframe.__path__, "equiframe."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")[1:]):
            continue
        if any(name == m or name.startswith(m + ".") for m in EXCLUDED_MODULES):
            continue
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None)
        if names is None:
            names = [n for n, o in vars(mod).items() if not n.startswith("_") and getattr(o, "__module__", None) == name]
        for n in names:
            obj = getattr(mod, n)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("equiframe."):
                continue  # a re-exported type of another package (typing aliases, tuple)
            if any(obj.__module__ == m or obj.__module__.startswith(m + ".") for m in EXCLUDED_MODULES):
                continue
            out[f"{obj.__module__.removeprefix('equiframe.')}.{obj.__qualname__}"] = obj
    return out


@dataclasses.dataclass(frozen=True)
class Elsewhere:
    tests: tuple[str, ...]

    def __init__(self, *tests: str) -> None:
        object.__setattr__(self, "tests", tests)


@dataclasses.dataclass(frozen=True)
class Exempt:
    kind: str  # exception | no-arguments | record | cli
    why: str


def _raising_names() -> dict[str, tuple[set[str], set[str]]]:
    """``file::test`` -> (names used inside its ``pytest.raises`` blocks and parametrize lists, all its names),
    for the tests that have a ``pytest.raises``."""
    def names(node) -> set[str]:
        return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                if isinstance(n, (ast.Name, ast.Attribute))}

    out = {}
    for f in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(f.read_text())
        assigns = {n.targets[0].id: n.value for n in tree.body
                   if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
        helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")}
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            inside: set[str] = set()
            has = False
            for n in ast.walk(node):
                if isinstance(n, ast.With) and any(
                        isinstance(i.context_expr, ast.Call) and isinstance(i.context_expr.func, ast.Attribute)
                        and i.context_expr.func.attr == "raises" for i in n.items):
                    has = True
                    for b in n.body:
                        used = names(b)
                        inside |= used
                        for h in used & helpers.keys():
                            inside |= names(helpers[h])
            if not has:
                continue
            every = names(node)
            for d in node.decorator_list:
                inside |= names(d)
                for a in names(d) & assigns.keys():
                    inside |= names(assigns[a])
            out[f"{f.name}::{node.name}"] = (inside, every)
    return out


# ------------------------------------------------------------------------------------------ the registry
REC = "a result record the library fills (nothing a user passes is read from it)"
CLI = "adds options to / checks the argument parser; the commands' mistakes are tested through equiframe.cli.main"

REGISTRY: dict[str, Any] = {
    # --- exemptions (kinds checked by test_exemptions_are_of_their_kind)
    "nn.tensor_frames.capabilities.UnsupportedLayerError": Exempt("exception", "raised by TFConv"),
    "datasets.fetch.default_data_dir": Exempt("no-arguments", "reads $EQUIFRAME_DATA"),
    "experiments.graphs_separation.default_data_dir": Exempt("no-arguments", "reads $EQUIFRAME_DATA"),
    "geometry.KNNCovariance": Exempt("record", REC),
    "cli.add_run_mode_arguments": Exempt("cli", CLI),
    "cli.add_lr_schedule_arguments": Exempt("cli", CLI),
    "distributed.get_dist": Exempt("no-arguments", "reads the process group"),
    "frames.canonical.nauty_available": Exempt("no-arguments", "an import probe"),
    "nn.tensor_frames.hooks.known_message_layers": Exempt("no-arguments", "a constant list"),
    "nn.tensor_frames.survey.conv_layer_classes": Exempt("no-arguments", "enumerates torch_geometric.nn.conv"),
    "cli.build_parser": Exempt("no-arguments", "the parser; its mistakes: test_cli_grammar"),
    **{f"nn.tensor_frames.strategies.{k}": Exempt("no-arguments", "a TFConv strategy (TFConv validates its inputs)")
       for k in ("Strategy", "Expand", "Gcn", "Hook", "Message", "Nodes", "Plain")},
    "train.Experiment": Exempt("no-arguments", "the abstract base of experiments (subclasses check their configs)"),
    **{k: Exempt("record", REC) for k in (
        "datasets.fetch.DataSource", "datasets.mesh_io.PCPNetShape", "datasets.mesh_io.PointCloud",
        "frames.canonical.CanonicalLabels", "frames.canonical.SearchResult", "frames.graph.FrameElements",
        "models.graphs.GraphFrameInfo", "nn.tensor_frames.capabilities.LayerCaps", "nn.tensor_frames.strategies.Call",
        "nn.tensor_frames.survey.SurveyRow", "nn.tf_transport.ReceiverLayout", "pretrained._registry.WeightsInfo",
        "testing.EquivarianceReport", "train.RunResult")},
    "datasets.surfaces.Mesh": Exempt("record", "a (vertices, faces) pair; the functions that take one check it "
                                               "(face_normals_and_areas, sample_surface: test_shapes)"),
    "frames.base.Frame": Exempt("record", "the frame a Frames module computes (FrameAveraging checks its inputs)"),
    **{k: Exempt("cli", CLI) for k in (
        "cli.add_eval_arguments", "cli.add_nbody_data_arguments", "cli.add_nbody_train_arguments", "cli.check_paths",
        "datasets.fetch.add_cli", "experiments.graphs_cli.add_classify_arguments", "experiments.graphs_cli.add_cli",
        "experiments.graphs_cli.add_separate_arguments", "experiments.normals_cli.add_build_arguments",
        "experiments.normals_cli.add_cli", "experiments.normals_cli.add_data_arguments",
        "experiments.normals_cli.add_data_cli", "experiments.normals_cli.add_estimate_arguments",
        "experiments.normals_cli.add_shape_arguments", "experiments.normals_cli.add_table_arguments",
        "experiments.normals_cli.add_train_arguments")},
}

# --- bad-input tests in other files (checked by test_elsewhere_entries_are_bad_input_tests)
REGISTRY.update({
    "experiments.normals_augment.add_random_noise": Elsewhere('test_normals_local_training.py::test_query_neighbourhoods_and_noise'),
    "experiments.normals_augment.query_neighbourhoods": Elsewhere('test_normals_local_training.py::test_query_neighbourhoods_and_noise'),
    "experiments.normals_augment.NeighbourhoodSamples": Elsewhere(
        'test_normals_local_training.py::test_neighbourhood_samples_deterministic_noisy_mixed_densities'),
    "geometry.knn_covariance": Elsewhere('test_knn_covariance.py::test_bad_arguments_are_named'),
    "nn.mlp.mlp": Elsewhere('test_nn_mlp.py::test_a_single_layer_and_bad_arguments'),
    "transforms.ApplyGroupElement": Elsewhere('test_transforms.py::test_bad_arguments_name_themselves'),
    "transforms.RandomGroupElement": Elsewhere('test_transforms.py::test_bad_arguments_name_themselves',
                                               'test_transforms.py::test_bad_data_is_refused_before_anything_is_drawn'),
    "transforms.RandomNodePermutation": Elsewhere('test_transforms.py::test_bad_arguments_name_themselves'),
    "transforms.GaussianNoise": Elsewhere('test_transforms.py::test_bad_arguments_name_themselves'),
    "transforms.SubsamplePoints": Elsewhere('test_transforms.py::test_bad_arguments_name_themselves'),
    "transforms.Center": Elsewhere('test_transforms.py::test_center_and_add_degree_refuse_bad_arguments_and_data'),
    "transforms.AddDegree": Elsewhere('test_transforms.py::test_center_and_add_degree_refuse_bad_arguments_and_data'),
    "_native.use_native": Elsewhere('test_native.py::test_validation_and_modes'),
    "averaging.FrameAveraging": Elsewhere('test_averaging.py::test_call_errors', 'test_averaging_sn.py::test_sn_errors'),
    "checkpoints.load_checkpoint": Elsewhere('test_train.py::test_evaluate_run_and_registry'),
    "cli.main": Elsewhere('test_cli.py::test_argument_errors', 'test_cli_grammar.py::test_bad_option_values_are_one_line'),
    "datasets.cad.CADConfig": Elsewhere('test_cad.py::test_build_manifest_and_resume'),
    "datasets.cad.CADNormalsDataset": Elsewhere('test_cad.py::test_dataset_variants'),
    "datasets.cad.load_cad": Elsewhere('test_cad.py::test_build_manifest_and_resume'),
    "datasets.fetch.fetch": Elsewhere('test_graph_fetch.py::test_fetch_arguments_and_cli', 'test_graph_fetch.py::test_corrupted_download_is_refused'),
    "datasets.fetch.find_data_file": Elsewhere('test_graph_fetch.py::test_fetch_validates_and_is_found'),
    "datasets.graphs.connected_graphs": Elsewhere('test_graph_datasets.py::test_connected_graphs_errors'),
    "datasets.graphs.csl_dataset": Elsewhere('test_graph_datasets.py::test_csl'),
    "datasets.graphs.load_exp": Elsewhere('test_graph_datasets.py::test_exp_errors', 'test_graph_fetch.py::test_malformed_exp_npz'),
    "datasets.graphs.load_graph6": Elsewhere('test_graph_fetch.py::test_malformed_sr25_and_graph6', 'test_graph_datasets.py::test_load_graph6_file'),
    "datasets.graphs.load_sr25": Elsewhere('test_graph_fetch.py::test_malformed_sr25_and_graph6'),
    "datasets.graphs.parse_graph6": Elsewhere('test_graph_datasets.py::test_graph6_errors'),
    "datasets.graphs.to_graph6": Elsewhere('test_graph_datasets.py::test_graph6_errors'),
    "datasets.mesh_io.MeshNormalsDataset": Elsewhere('test_mesh_io.py::test_mesh_normals_dataset'),
    "datasets.mesh_io.load_pcpnet_shape": Elsewhere('test_mesh_io.py::test_pcpnet_errors'),
    "datasets.mesh_io.modelnet40_split": Elsewhere('test_mesh_io.py::test_modelnet40_bad_list', 'test_mesh_io.py::test_missing_files'),
    "datasets.mesh_io.normalize_points": Elsewhere('test_mesh_io.py::test_normalize_points'),
    "datasets.mesh_io.read_modelnet_normals": Elsewhere('test_mesh_io.py::test_read_modelnet_normals_errors', 'test_mesh_io.py::test_read_modelnet_normals'),
    "datasets.mesh_io.read_pidx": Elsewhere('test_mesh_io.py::test_pcpnet_errors'),
    "datasets.mesh_io.read_point_cloud": Elsewhere('test_estimator.py::test_point_cloud_bad_files'),
    "datasets.mesh_io.read_xyz": Elsewhere('test_mesh_io.py::test_pcpnet_errors'),
    "datasets.mesh_io.sample_mesh_file": Elsewhere('test_mesh_io.py::test_sample_mesh_file_normals_and_area'),
    "datasets.mesh_io.write_point_cloud": Elsewhere('test_estimator.py::test_write_bad_input'),
    "datasets.mesh_readers.read_mesh": Elsewhere('test_mesh_io.py::test_read_mesh_dispatch_and_trimesh_crosscheck'),
    "datasets.mesh_readers.read_obj": Elsewhere('test_mesh_io.py::test_read_obj_errors'),
    "datasets.mesh_readers.read_off": Elsewhere('test_mesh_io.py::test_read_off_errors'),
    "datasets.mesh_readers.read_ply": Elsewhere('test_mesh_io.py::test_read_ply_errors', 'test_mesh_io.py::test_read_ply_binary'),
    "datasets.nbody.NBodyDataset": Elsewhere('test_nbody.py::test_dataset_options'),
    "datasets.nbody.collate_nbody": Elsewhere('test_nbody.py::test_dataset_items_and_batches'),
    "datasets.nbody.egnn_initial_conditions": Elsewhere('test_nbody.py::test_egnn_stream_config_and_cache_key'),
    "datasets.nbody.generate_nbody": Elsewhere('test_nbody.py::test_cache_hit_miss_and_corruption', 'test_nbody.py::test_dataset_options'),
    "datasets.nbody.integrate_charged": Elsewhere('test_nbody.py::test_integrate_input_validation'),
    "datasets.nbody.load_egnn_npy": Elsewhere('test_nbody.py::test_load_egnn_errors'),
    "datasets.nbody.nbody_baselines": Elsewhere('test_nbody.py::test_baselines_on_synthetic_data'),
    "datasets.nbody.simulate_charged": Elsewhere('test_nbody.py::test_config_validation'),
    "datasets.nbody_config.NBodyConfig": Elsewhere('test_nbody.py::test_config_validation', 'test_nbody.py::test_egnn_stream_config_and_cache_key'),
    "datasets.normal_metrics.knn_pca_normals": Elsewhere('test_shapes.py::test_knn_pca_bad_k', 'test_shapes.py::test_knn_pca_bad_input'),
    "datasets.normal_metrics.normal_loss": Elsewhere('test_shapes.py::test_normal_loss_values_and_safety'),
    "datasets.shapes.NormalsDataset": Elsewhere('test_shapes.py::test_dataset_options'),
    "datasets.shapes.ShapesConfig": Elsewhere('test_shapes.py::test_config_rejects_bad_values', 'test_shapes.py::test_dataset_options'),
    "datasets.shapes.build_shapes": Elsewhere('test_shapes.py::test_dataset_options'),
    "datasets.shapes.generate_shape": Elsewhere('test_shapes.py::test_generate_shape_deterministic_and_normalised'),
    "datasets.shapes.make_analytic_shape": Elsewhere('test_shapes.py::test_analytic_shapes_are_valid_solids'),
    "datasets.surfaces.normalize_mesh": Elsewhere('test_shapes.py::test_normalize_mesh_bbox_and_area'),
    "datasets.surfaces.sample_surface": Elsewhere('test_shapes.py::test_sample_surface_bad_input', 'test_shapes.py::test_sample_surface_needs_generator'),
    "distributed.DistInfo": Elsewhere('test_ddp.py::test_epoch_batches_split_the_single_process_batches'),
    "distributed.epoch_batches": Elsewhere('test_ddp.py::test_epoch_batches_split_the_single_process_batches'),
    "experiments.experiment_from_dict": Elsewhere('test_train.py::test_evaluate_run_and_registry'),
    "experiments.graphs.GraphClassificationConfig": Elsewhere('test_graph_classify.py::test_train_frame_default_and_errors', 'test_graph_classify.py::test_train_components_options_and_errors'),
    "experiments.graphs.GraphClassificationExperiment": Elsewhere('test_graph_classify.py::test_train_components_options_and_errors', 'test_graph_classify.py::test_classification_config_train_frame'),
    "experiments.graphs_separation.separate": Elsewhere('test_graph_separation.py::test_separate_errors', 'test_graph_separation.py::test_degree_node_features'),
    "experiments.graphs_separation.undistinguished_pairs": Elsewhere('test_graph_separation.py::test_undistinguished_pairs_errors'),
    "experiments.nbody.NBodyExperimentConfig": Elsewhere('test_train.py::test_config_validation'),
    "experiments.normals.NormalsExperiment": Elsewhere('test_cad.py::test_experiment_on_cad_parts'),
    "experiments.normals.NormalsExperimentConfig": Elsewhere('test_experiment_normals.py::test_config_validation_and_roundtrip', 'test_cad.py::test_experiment_on_cad_parts'),
    "experiments.normals.collect_runs": Elsewhere('test_report.py::test_missing_root_is_a_clear_error'),
    "frames.canonical.CanonicalBudgetError": Elsewhere('test_graph_canonical.py::test_over_budget_is_loud'),
    "frames.canonical.CanonicalBudgetWarning": Elsewhere('test_graph_canonical.py::test_over_budget_is_loud'),
    "frames.canonical.canonical_keys": Elsewhere('test_graph_canonical.py::test_argument_errors', 'test_graph_models.py::test_canonical_keys_errors'),
    "frames.canonical.wl_classes": Elsewhere('test_graph_inputs.py::test_bad_graph_input_names_the_argument'),
    "frames.components.connected_components": Elsewhere('test_graph_inputs.py::test_frame_helpers_check_their_arguments'),
    "frames.graph.canonical_ranks": Elsewhere('test_graph_frames.py::test_bad_input'),
    "frames.graph.frame_elements": Elsewhere('test_graph_frames.py::test_bad_input'),
    "frames.graph.laplacian_frame": Elsewhere('test_graph_frames.py::test_bad_input', 'test_graph_inputs.py::test_bad_graph_input_names_the_argument'),
    "frames.graph.permute_graph": Elsewhere('test_graph_inputs.py::test_frame_helpers_check_their_arguments'),
    "frames.local.LearnedFrames": Elsewhere('test_local_frames.py::test_learned_validation'),
    "frames.local.gram_schmidt_frames": Elsewhere('test_local_frames.py::test_gram_schmidt_fallbacks'),
    "frames.local.identity_frames": Elsewhere('test_local_frames.py::test_identity_and_random_frames'),
    "frames.local.local_pca_frames": Elsewhere('test_local_frames.py::test_pca_edge_weight_and_validation'),
    "frames.local.random_global_frames": Elsewhere('test_local_frames.py::test_identity_and_random_frames'),
    "frames.local.random_local_frames": Elsewhere('test_local_frames.py::test_identity_and_random_frames'),
    "frames.neighbourhood.knn_graph_with_ties": Elsewhere('test_local_frames.py::test_knn_graph_with_ties_is_knn_graph'),
    "frames.pca.PCAFrames": Elsewhere('test_pca_frames.py::test_frames_object_validates_its_options', 'test_averaging.py::test_constructor_bad_arguments_name_the_argument'),
    "frames.pca.Tolerances": Elsewhere('test_pca_frames.py::test_tolerances_per_dtype'),
    "frames.pca.pca_frame": Elsewhere('test_pca_frames.py::test_bad_input_gives_clear_errors', 'test_pca_frames.py::test_integer_input_is_a_type_error'),
    "geometry.batch_to_ptr": Elsewhere('test_geometry.py::test_batch_to_ptr_roundtrip_and_errors'),
    "geometry.knn_graph": Elsewhere('test_geometry.py::test_validation_errors'),
    "geometry.radius_graph": Elsewhere('test_geometry.py::test_validation_errors'),
    "groups.EuclideanGroup": Elsewhere('test_groups.py::test_d_placeholder_and_errors', 'test_groups.py::test_bad_arguments_name_the_argument'),
    "groups.SymmetricGroup": Elsewhere('test_groups.py::test_symmetric_group_samples_permutations_inside_graphs'),
    "groups.random_orthogonal": Elsewhere('test_groups.py::test_bad_arguments_name_the_argument'),
    "linalg.eigen_gaps": Elsewhere('test_linalg.py::test_invalid_options'),
    "linalg.symeig": Elsewhere('test_linalg.py::test_invalid_input', 'test_linalg.py::test_invalid_options'),
    "models.graphs.AdjacencyMLP": Elsewhere('test_graph_models.py::test_model_errors'),
    "models.graphs.GINWithIDs": Elsewhere('test_graph_models.py::test_model_errors'),
    "models.graphs.build_graph_model": Elsewhere('test_graph_models.py::test_model_errors', 'test_graph_canonical.py::test_argument_errors'),
    "models.nbody.EGNN": Elsewhere('test_models_nbody.py::test_bad_inputs_raise'),
    "models.nbody.LayerwiseFAGNN": Elsewhere('test_models_nbody.py::test_layerwise_fa_gnn_gradients_and_errors'),
    "models.nbody.LinearDynamics": Elsewhere('test_models_nbody.py::test_factory_defaults_and_errors'),
    "models.nbody.NBodyGNN": Elsewhere('test_models_nbody.py::test_factory_defaults_and_errors'),
    "models.nbody.build_nbody_model": Elsewhere('test_models_nbody.py::test_factory_defaults_and_errors', 'test_models_nbody.py::test_layerwise_fa_gnn_gradients_and_errors'),
    "models.normals.DGCNN": Elsewhere('test_models_normals.py::test_bad_inputs'),
    "models.normals.FANormals": Elsewhere('test_models_normals.py::test_fa_wraps_backbone_and_modes'),
    "models.normals.LocalPointNet": Elsewhere('test_models_normals.py::test_bad_inputs'),
    "models.normals.PlainNormals": Elsewhere('test_models_normals.py::test_fa_wraps_backbone_and_modes'),
    "models.normals.PointNetSeg": Elsewhere('test_models_normals.py::test_bad_inputs', 'test_models_normals.py::test_fa_wraps_backbone_and_modes'),
    "models.normals.TFPointNet": Elsewhere('test_models_normals.py::test_bad_inputs', 'test_models_normals.py::test_tf_pointnet_pooled_edge_features'),
    "models.normals.build_normals_model": Elsewhere('test_models_normals.py::test_bad_inputs'),
    "models.normals_geometry.farthest_point_sampling": Elsewhere('test_models_normals.py::test_farthest_point_sampling_invariant'),
    "models.normals_geometry.jet_normals": Elsewhere('test_estimator.py::test_baselines_on_a_sphere'),
    "models.normals.PlaneVote": Elsewhere('test_normals_vote.py::test_vote_bad_arguments'),
    "models.normals_local.candidate_planes": Elsewhere('test_normals_vote.py::test_candidate_planes_2d_and_degenerate'),
    "models.normals_local.ransac_normals": Elsewhere('test_normals_vote.py::test_ransac_normals_degenerate_and_bad_inputs'),
    "models.normals_geometry.knn_geometry": Elsewhere('test_models_normals.py::test_knn_geometry_and_features'),
    "models.normals_geometry.local_features": Elsewhere('test_models_normals.py::test_knn_geometry_and_features'),
    "nn.tensor_frames.conv.TFConv": Elsewhere('test_tensor_frames.py::test_input_validation', 'test_tensor_frames.py::test_multi_hop_layers_are_refused'),
    "nn.tensor_frames.graph.TFGraph": Elsewhere('test_reps_rotation.py::test_graph_edge_index_range_checked', 'test_tensor_frames.py::test_tfgraph_bipartite'),
    "nn.tensor_frames.local.ToGlobal": Elsewhere('test_tensor_frames.py::test_to_local_to_global'),
    "nn.tensor_frames.local.ToLocal": Elsewhere('test_tensor_frames.py::test_to_local_to_global'),
    "nn.tf_attention.TensorFrameAttention": Elsewhere('test_tf_layers.py::test_attention_validation'),
    "nn.tf_conv.TensorFrameConv": Elsewhere('test_tf_layers.py::test_native_conv_validation'),
    "nn.tf_transport.transport_edges": Elsewhere('test_tensor_frames.py::test_transport_no_grad_chunks_equal_autograd_path'),
    "pretrained._loader.ChecksumError": Elsewhere('test_pretrained.py::test_checksum_mismatch_is_a_clear_error'),
    "pretrained._loader.available": Elsewhere('test_native.py::test_validation_and_modes', 'test_native.py::test_require_mode_raises_without_compiler'),
    "pretrained._loader.build": Elsewhere('test_cache.py::test_corrupted_arrays_detected'),
    "pretrained._loader.evaluate": Elsewhere('test_pretrained.py::test_evaluate_checks_its_arguments', 'test_pretrained.py::test_save_then_load_round_trips'),
    "pretrained._loader.info": Elsewhere('test_pretrained.py::test_unknown_name_lists_the_available_ones'),
    "pretrained._loader.load": Elsewhere('test_pretrained.py::test_checksum_mismatch_is_a_clear_error', 'test_pretrained.py::test_unknown_name_lists_the_available_ones'),
    "pretrained._loader.save": Elsewhere('test_pretrained.py::test_save_then_load_round_trips', 'test_pretrained.py::test_sidecars_cannot_name_foreign_builders_or_mismatched_files'),
    "pretrained.normals.NormalEstimator": Elsewhere('test_estimator.py::test_estimator_bad_input'),
    "pretrained.normals.load_normal_model": Elsewhere('test_estimator.py::test_weights_roundtrip_and_checksum'),
    "report.collect_runs": Elsewhere('test_report.py::test_missing_root_is_a_clear_error'),
    "report.write_report": Elsewhere('test_report.py::test_plots_without_matplotlib_say_how_to_get_it'),
    "reps.Block": Elsewhere('test_reps.py::test_bad_arguments_name_the_argument'),
    "reps.TensorReps": Elsewhere('test_reps.py::test_bad_dim_and_shapes', 'test_native.py::test_validation_and_modes'),
    "testing.assert_equivariant": Elsewhere('test_testing.py::test_wrong_output_type_fails', 'test_testing.py::test_permutations_sn'),
    "testing.equivariance_error": Elsewhere('test_testing.py::test_bad_arguments', 'test_testing.py::test_missing_output_type_is_an_error'),
    "train.evaluate": Elsewhere('test_pretrained.py::test_evaluate_checks_its_arguments', 'test_pretrained.py::test_save_then_load_round_trips'),
    "train.evaluate_run": Elsewhere('test_train.py::test_evaluate_run_and_registry'),
    "train.fit": Elsewhere('test_train.py::test_nonfinite_loss_is_an_error', 'test_train.py::test_resume_fills_options_added_after_the_checkpoint'),
    "train_config.OptimConfig": Elsewhere('test_train.py::test_config_validation', 'test_train.py::test_nonfinite_loss_is_an_error'),
    "train_config.TrainConfig": Elsewhere('test_train.py::test_config_validation'),
})


# ------------------------------------------------------------------------------------------ cases here
V, T, OK = ValueError, TypeError, "ok"


def _file(t: Path, name: str, content: str | bytes) -> Path:
    p = t / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _i(name: str) -> Any:
    """``"module:attr"`` of equiframe, imported when the case runs."""
    mod, attr = name.split(":")
    return getattr(importlib.import_module(f"equiframe.{mod}"), attr)


def _ei(*pairs) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.long).t().contiguous()


_P3 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
_NAN = torch.tensor([[0.0, float("nan"), 1.0]] * 8, dtype=torch.float64)
_F16 = _P3.half()
_I64 = torch.ones(8, 3, dtype=torch.long)
_Q = torch.linalg.qr(torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]


def _figure():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt.figure()


def _frame(n: int = 4):
    return _i("frames.graph:laplacian_frame")(_ei((0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)), n)


CASES: dict[str, list[tuple[Any, str, Callable[[Path], Any]]]] = {
    # ---------------------------------------------------------------- core
    "averaging.node_ranks": [
        (V, "batch", lambda t: _i("averaging:node_ranks")(torch.tensor([1, 0, 0]))),
        (T, "batch", lambda t: _i("averaging:node_ranks")(torch.zeros(3))),
    ],
    "folding.FoldedBatch": [
        (V, "weight", lambda t: _i("folding:FoldedBatch")(torch.zeros(3, dtype=torch.long), torch.ones(2), 1)),
        (V, "num_examples", lambda t: _i("folding:FoldedBatch")(torch.zeros(3, dtype=torch.long), torch.ones(3), -1)),
    ],
    "groups.GroupElement": [
        (V, "Q", lambda t: _i("groups:GroupElement")(torch.eye(3)[:2], torch.zeros(3))),
        (V, "s", lambda t: _i("groups:GroupElement")(torch.eye(3), torch.zeros(2))),
    ],
    "groups.parse_group": [
        (V, "spec|group", lambda t: _i("groups:parse_group")("SU(3)")),
        (T, "group", lambda t: _i("groups:parse_group")(3)),
        (V, "dim", lambda t: _i("groups:parse_group")("O(3)", dim=0)),
    ],
    "reps.as_reps": [
        (V, "reps|spec", lambda t: _i("reps:as_reps")("3y1n")),
        (T, "reps|spec", lambda t: _i("reps:as_reps")(3)),
        (V, "dim", lambda t: _i("reps:as_reps")("1x1n", dim=0)),
    ],
    "reps.kron_power": [
        (V, "R", lambda t: _i("reps:kron_power")(torch.eye(3)[:2], 2)),
        (V, "k", lambda t: _i("reps:kron_power")(torch.eye(3), -1)),
    ],
    "geometry.ptr_to_batch": [
        (V, "ptr", lambda t: _i("geometry:ptr_to_batch")(torch.tensor([0, 3, 2]))),
        (T, "ptr", lambda t: _i("geometry:ptr_to_batch")(torch.tensor([0.0, 3.0]))),
    ],
    "frames.pca.covariance": [
        (V, "pos", lambda t: _i("frames.pca:covariance")(_NAN)),
        (T, "pos", lambda t: _i("frames.pca:covariance")(_I64)),
        (V, "pos", lambda t: _i("frames.pca:covariance")(torch.zeros(0, 3))),
        (V, "batch", lambda t: _i("frames.pca:covariance")(_P3, batch=torch.zeros(7, dtype=torch.long))),
    ],
    "frames.laplacian.LaplacianFrames": [
        (V, "mode", lambda t: _i("frames.laplacian:LaplacianFrames")("some")),
        (V, "n_samples", lambda t: _i("frames.laplacian:LaplacianFrames")("stochastic", n_samples=0)),
        (V, "max_size", lambda t: _i("frames.laplacian:LaplacianFrames")(max_size=0)),
    ],
    "frames.local.LocalPCAFrames": [
        (V, "k", lambda t: _i("frames.local:LocalPCAFrames")(k=0)),
        (V, "r", lambda t: _i("frames.local:LocalPCAFrames")(r=-1.0)),
        (V, "center", lambda t: _i("frames.local:LocalPCAFrames")(k=4, center="middle")),
        (V, "pos", lambda t: _i("frames.local:LocalPCAFrames")(k=4)(_NAN)),
    ],
    "frames.local.polynomial_envelope": [
        (V, "exponent", lambda t: _i("frames.local:polynomial_envelope")(torch.rand(4), 0)),
        (T, "x", lambda t: _i("frames.local:polynomial_envelope")(torch.ones(4, dtype=torch.long))),
    ],
    "frames.neighbourhood.neighbourhood_ties": [
        (V, "k|r", lambda t: _i("frames.neighbourhood:neighbourhood_ties")(_P3)),
        (V, "pos", lambda t: _i("frames.neighbourhood:neighbourhood_ties")(_NAN, k=3)),
        (V, "k", lambda t: _i("frames.neighbourhood:neighbourhood_ties")(_P3, k=0)),
    ],
    "frames.neighbourhood.tie_tolerance": [
        (V, "dist", lambda t: _i("frames.neighbourhood:tie_tolerance")(_P3, torch.rand(5))),
        (T, "pos", lambda t: _i("frames.neighbourhood:tie_tolerance")(_I64, torch.rand(8, 2))),
    ],
    "frames.graph.PermutationFrame": [
        (V, "block|order", lambda t: _i("frames.graph:PermutationFrame")(torch.arange(3), torch.zeros(2, dtype=torch.long),
                                                                            torch.tensor([0, 3]))),
        (V, "ptr", lambda t: _i("frames.graph:PermutationFrame")(torch.arange(3), torch.zeros(3, dtype=torch.long),
                                                                   torch.tensor([0, 2]))),
    ],
    "frames.graph.fold_edge_index": [
        (V, "edge_index", lambda t: _i("frames.graph:fold_edge_index")(
            _i("frames.graph:frame_elements")(_frame(), limit=64, k=1), _ei((0, 9)), 4)),
        (V, "num_nodes", lambda t: _i("frames.graph:fold_edge_index")(
            _i("frames.graph:frame_elements")(_frame(), limit=64, k=1), _ei((0, 1)), 3)),
    ],
    "frames.components.shuffle_components": [
        (V, "edge_index", lambda t: _i("frames.components:shuffle_components")(_frame(), _ei((0, 7)))),
        (T, "frame", lambda t: _i("frames.components:shuffle_components")("frame", _ei((0, 1)))),
    ],
    "frames.canonical.canonical_code": [
        (V, "n", lambda t: _i("frames.canonical:canonical_code")(-1, [])),
        (V, "edges", lambda t: _i("frames.canonical:canonical_code")(3, [(0, 5)])),
    ],
    "frames.canonical.code_edges": [
        (V, "n", lambda t: _i("frames.canonical:code_edges")(-2, 0)),
        (V, "code", lambda t: _i("frames.canonical:code_edges")(3, -1)),
    ],
    "frames.canonical.individualisation_refinement": [
        (V, "init", lambda t: _i("frames.canonical:individualisation_refinement")(3, [0, 0], list, lambda c: 0)),
        (V, "n", lambda t: _i("frames.canonical:individualisation_refinement")(-1, [], list, lambda c: 0)),
    ],
    # ---------------------------------------------------------------- tensor frames
    "nn.tensor_frames.checks.check_frames": [
        (V, "frames", lambda t: _i("nn.tensor_frames.checks:check_frames")(_Q[:, :2], 8, 3)),
        (T, "frames", lambda t: _i("nn.tensor_frames.checks:check_frames")(_Q.long(), 8, 3)),
        (V, "frames: contains NaN", lambda t: _i("nn.tensor_frames.checks:check_frames")(_Q * float("nan"), 8, 3)),
        (T, "frames", lambda t: _i("nn.tensor_frames.checks:check_frames")(_Q.numpy(), 8, 3)),
    ],
    "nn.tensor_frames.geometry.edge_frames": [
        (V, "frames_src|frames_dst", lambda t: _i("nn.tensor_frames.geometry:edge_frames")(
            _Q, _Q[:, :2], torch.tensor([0]), torch.tensor([1]))),
        (V, "src, dst", lambda t: _i("nn.tensor_frames.geometry:edge_frames")(_Q, _Q, torch.tensor([0, 1]), torch.tensor([1]))),
    ],
    "nn.tensor_frames.geometry.geometry_dim": [
        (V, "kind", lambda t: _i("nn.tensor_frames.geometry:geometry_dim")(3, "angles")),
        (V, "dim", lambda t: _i("nn.tensor_frames.geometry:geometry_dim")(0)),
    ],
    "nn.tensor_frames.geometry.safe_length": [
        (V, "eps", lambda t: _i("nn.tensor_frames.geometry:safe_length")(_P3, eps=0.0)),
        (T, "v", lambda t: _i("nn.tensor_frames.geometry:safe_length")(_I64)),
    ],
    "nn.tensor_frames.geometry.local_edge_geometry": [
        (V, "kind", lambda t: _i("nn.tensor_frames.geometry:local_edge_geometry")(
            _P3, _P3, _Q, torch.tensor([0]), torch.tensor([1]), kind="angles")),
        (IndexError, "dst: indices must lie", lambda t: _i("nn.tensor_frames.geometry:local_edge_geometry")(
            _P3, _P3, _Q, torch.tensor([0]), torch.tensor([8]))),
    ],
    "nn.tensor_frames.geometry.transport": [
        (V, "x_j", lambda t: _i("nn.tensor_frames.geometry:transport")(
            equiframe.TensorReps("1x1n", dim=3), torch.ones(1, 4, dtype=torch.float64), _Q, _Q,
            torch.tensor([0]), torch.tensor([1]))),
        (V, "src|dst", lambda t: _i("nn.tensor_frames.geometry:transport")(
            equiframe.TensorReps("1x1n", dim=3), torch.ones(1, 3, dtype=torch.float64), _Q, _Q,
            torch.tensor([0, 1]), torch.tensor([8]))),
    ],
    "nn.tensor_frames.capabilities.Prober": [
        (T, "layer", lambda t: _i("nn.tensor_frames.capabilities:Prober")(None, nn.Linear(2, 2), 0)),
    ],
    "nn.tensor_frames.capabilities.inspect_layer": [
        (T, "layer", lambda t: _i("nn.tensor_frames.capabilities:inspect_layer")(nn.Linear(2, 2))),
        (T, "layer", lambda t: _i("nn.tensor_frames.capabilities:inspect_layer")("GCNConv")),
    ],
    # right answers to odd input: a string is not a linear module; a Linear has no message spec
    "nn.tensor_frames.hooks.is_linear": [(OK, lambda r: r is False, lambda t: _i("nn.tensor_frames.hooks:is_linear")("Linear"))],
    "nn.tensor_frames.hooks.message_spec": [
        (OK, lambda r: r is None, lambda t: _i("nn.tensor_frames.hooks:message_spec")(nn.Linear(2, 2))),
    ],
    "nn.tensor_frames.strategies.GlobalFrame": [
        (OK, lambda r: r.skip_lin is True, lambda t: _i("nn.tensor_frames.strategies:GlobalFrame")(skip_lin=True)),
    ],
    "nn.tensor_frames.survey.build_layer": [
        (T, "cls", lambda t: _i("nn.tensor_frames.survey:build_layer")(nn.Linear, 4, 4, 3)),
        (V, "c_in", lambda t: _i("nn.tensor_frames.survey:build_layer")(GCNConv, 0, 4, 3)),
    ],
    "nn.tensor_frames.survey.static_refusal": [
        (T, "cls", lambda t: _i("nn.tensor_frames.survey:static_refusal")("GCNConv")),
    ],
    "nn.tensor_frames.survey.survey": [
        (V, "d", lambda t: _i("nn.tensor_frames.survey:survey")(d=0)),
        (V, "reps", lambda t: _i("nn.tensor_frames.survey:survey")(reps="3y1n")),
    ],
    "nn.tensor_frames.survey.layer_table": [
        (T, "rows", lambda t: _i("nn.tensor_frames.survey:layer_table")([("GCNConv", True)])),
    ],
    "nn.tf_transport.receiver_layout": [
        (V, "src|dst", lambda t: _i("nn.tf_transport:receiver_layout")(torch.tensor([0, 1]), torch.tensor([0]), 2)),
        (V, "dst|n_dst", lambda t: _i("nn.tf_transport:receiver_layout")(torch.tensor([0]), torch.tensor([5]), 2)),
        (V, "max_pad", lambda t: _i("nn.tf_transport:receiver_layout")(torch.tensor([0]), torch.tensor([1]), 2,
                                                                         max_pad=0.5)),
    ],
    "nn.tf_transport.receiver_matrices": [
        (V, "frames_dst", lambda t: _i("nn.tf_transport:receiver_matrices")(equiframe.TensorReps("1x1n", dim=3), _Q[:, :2])),
    ],
    "nn.tf_transport.rotate_by_receiver": [
        (V, "v|frames_dst", lambda t: _i("nn.tf_transport:rotate_by_receiver")(
            torch.ones(2, 4), _Q.float(), _i("nn.tf_transport:receiver_layout")(torch.tensor([0, 1]), torch.tensor([1, 2]), 8))),
    ],
    "nn.tf_transport.rotate_edges": [
        (V, "y", lambda t: _i("nn.tf_transport:rotate_edges")(
            equiframe.TensorReps("1x1n", dim=3), torch.ones(2, 4, dtype=torch.float64), _Q,
            _i("nn.tf_transport:receiver_layout")(torch.tensor([0, 1]), torch.tensor([1, 2]), 8))),
    ],
}

CASES.update({
    # ---------------------------------------------------------------- data sets: graphs
    "datasets.graphs.all_pairs": [(V, "num_graphs", lambda t: _i("datasets.graphs:all_pairs")(-1)),
                                  (T, "num_graphs", lambda t: _i("datasets.graphs:all_pairs")(2.5))],
    "datasets.graphs.consecutive_pairs": [(V, "num_graphs", lambda t: _i("datasets.graphs:consecutive_pairs")(-1)),
                                          (T, "num_graphs", lambda t: _i("datasets.graphs:consecutive_pairs")("4"))],
    "datasets.graphs.iter_all_pairs": [(V, "chunk_size", lambda t: list(_i("datasets.graphs:iter_all_pairs")(4, 0))),
                                       (V, "num_graphs", lambda t: list(_i("datasets.graphs:iter_all_pairs")(-3)))],
    "datasets.graphs.edges_to_data": [(V, "edges", lambda t: _i("datasets.graphs:edges_to_data")(3, [(0, 3)])),
                                      (V, "n", lambda t: _i("datasets.graphs:edges_to_data")(-1, []))],
    "datasets.graphs.srg_parameters": [(V, "edge_index", lambda t: _i("datasets.graphs:srg_parameters")(_ei((0, 5)), 3)),
                                       (V, "num_nodes", lambda t: _i("datasets.graphs:srg_parameters")(_ei((0, 1)), 0))],
    "datasets.graphs.graph8c": [(V, "method", lambda t: _i("datasets.graphs:graph8c")(method="geng"))],
    "datasets.graphs.to_exp_txt": [(V, "graphs", lambda t: _i("datasets.graphs:to_exp_txt")([object()]))],
    "datasets.fetch.data_source": [(FileNotFoundError, "data_dir", lambda t: _i("datasets.fetch:data_source")("exp", t))],
    # ---------------------------------------------------------------- data sets: files
    "datasets.mesh_io.read_normals": [
        (V, "normals|path", lambda t: _i("datasets.mesh_io:read_normals")(_file(t, "a.normals", "1 0 0\n0 1\n"))),
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_io:read_normals")(t / "missing.normals")),
    ],
    "datasets.mesh_io.read_shape_list": [
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_io:read_shape_list")(t / "missing.txt")),
        (V, "empty|path", lambda t: _i("datasets.mesh_io:read_shape_list")(_file(t, "l.txt", "\n"))),
    ],
    "datasets.mesh_io.modelnet40_shape_names": [
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_io:modelnet40_shape_names")(t)),
        (V, "variant", lambda t: _i("datasets.mesh_io:modelnet40_shape_names")(t, "modelnet7")),
    ],
    "datasets.mesh_io.ModelNet40Normals": [
        (V, "split", lambda t: _i("datasets.mesh_io:ModelNet40Normals")(t, "val")),
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_io:ModelNet40Normals")(t, "train")),
    ],
    "datasets.mesh_io.PCPNetShapes": [
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_io:PCPNetShapes")(t)),
    ],
    "datasets.mesh_readers.read_stl": [
        (V, "stl|truncated|path", lambda t: _i("datasets.mesh_readers:read_stl")(_file(t, "a.stl", b"\0" * 80 + b"\5\0\0\0" + b"\0" * 60))),
        (V, "stl|path", lambda t: _i("datasets.mesh_readers:read_stl")(_file(t, "b.stl", "solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0\n"))),
        (FileNotFoundError, None, lambda t: _i("datasets.mesh_readers:read_stl")(t / "missing.stl")),
    ],
    "datasets.surfaces.face_normals_and_areas": [
        (V, "face", lambda t: _i("datasets.surfaces:face_normals_and_areas")(np.zeros((3, 3)), np.array([[0, 1, 5]]))),
        (V, "vertices", lambda t: _i("datasets.surfaces:face_normals_and_areas")(np.zeros((3, 2)), np.array([[0, 1, 2]]))),
        (V, "vertices", lambda t: _i("datasets.surfaces:face_normals_and_areas")(np.full((3, 3), np.nan), np.array([[0, 1, 2]]))),
    ],
    "datasets.surfaces.is_closed_manifold": [
        (V, "faces", lambda t: _i("datasets.surfaces:is_closed_manifold")(np.array([[0, 1]]))),
        (T, "faces", lambda t: _i("datasets.surfaces:is_closed_manifold")(np.array([[0.5, 1, 2]]))),
    ],
    "datasets.normal_metrics.angular_error_deg": [
        (V, "target|pred", lambda t: _i("datasets.normal_metrics:angular_error_deg")(_P3, _P3[:4])),
        (V, "reduction", lambda t: _i("datasets.normal_metrics:angular_error_deg")(_P3, _P3, "sum")),
        (V, "pred", lambda t: _i("datasets.normal_metrics:angular_error_deg")(_NAN, _P3)),
    ],
    # ---------------------------------------------------------------- data sets: n-body, CAD, shapes
    "datasets.nbody.fully_connected_edge_index": [
        (V, "n", lambda t: _i("datasets.nbody:fully_connected_edge_index")(0)),
        (T, "n", lambda t: _i("datasets.nbody:fully_connected_edge_index")(2.5)),
    ],
    "datasets.nbody.sample_initial_conditions": [
        (V, "n_sims", lambda t: _i("datasets.nbody:sample_initial_conditions")(-1, _i("datasets.nbody:NBodyConfig")(),
                                                                               np.random.default_rng(0))),
        (T, "rng", lambda t: _i("datasets.nbody:sample_initial_conditions")(2, _i("datasets.nbody:NBodyConfig")(), 0)),
    ],
    "datasets.nbody.split_rng": [
        (V, "split", lambda t: _i("datasets.nbody:split_rng")(_i("datasets.nbody:NBodyConfig")(), "val")),
        (T, "config", lambda t: _i("datasets.nbody:split_rng")({}, "train")),
    ],
    "datasets.cad.cad_split": [(V, "index", lambda t: _i("datasets.cad:cad_split")(-1)),
                               (T, "index", lambda t: _i("datasets.cad:cad_split")(1.5))],
    "datasets.cad.part_rng": [(V, "seed", lambda t: _i("datasets.cad:part_rng")(-1, 0)),
                              (V, "index", lambda t: _i("datasets.cad:part_rng")(0, -1))],
    "datasets.cad.generate_part": [(V, "index", lambda t: _i("datasets.cad:generate_part")(_i("datasets.cad:CADConfig")(), -1)),
                                   (V, "max_attempts", lambda t: _i("datasets.cad:generate_part")(_i("datasets.cad:CADConfig")(), 0, 0))],
    "datasets.cad.build_cad": [(V, "workers", lambda t: _i("datasets.cad:build_cad")(_i("datasets.cad:CADConfig")(n_parts=1), t, workers=-1)),
                               (V, "timeout", lambda t: _i("datasets.cad:build_cad")(_i("datasets.cad:CADConfig")(n_parts=1), t, timeout=0))],
    "datasets.cad.cad_dir": [(T, "config", lambda t: _i("datasets.cad:cad_dir")({}, t))],
    "datasets.cad_geometry.make_part": [(V, "family", lambda t: _i("datasets.cad_geometry:make_part")(np.random.default_rng(0), "blob")),
                                        (T, "rng", lambda t: _i("datasets.cad_geometry:make_part")(0))],
    "datasets.cad_geometry.sample_shape": [(V, "n_points", lambda t: _i("datasets.cad_geometry:sample_shape")(None, 0, np.random.default_rng(0))),
                                           (V, "deflection", lambda t: _i("datasets.cad_geometry:sample_shape")(None, 4, np.random.default_rng(0), deflection=0))],
    "datasets.csg.make_csg_shape": [(V, "resolution", lambda t: _i("datasets.shapes:make_csg_shape")(np.random.default_rng(0), 2)),
                                       (V, "max_ops", lambda t: _i("datasets.shapes:make_csg_shape")(np.random.default_rng(0), 48, -1))],
    "datasets.shapes.generate_shapes": [(V, "workers", lambda t: _i("datasets.shapes:generate_shapes")(_i("datasets.shapes:ShapesConfig")(n_train=1, n_test=1), workers=-1)),
                                        (V, "chunk_size", lambda t: _i("datasets.shapes:generate_shapes")(_i("datasets.shapes:ShapesConfig")(n_train=1, n_test=1), chunk_size=0))],
    "datasets.shapes.shapes_cache_path": [(T, "config", lambda t: _i("datasets.shapes:shapes_cache_path")({}, t))],
})

CASES.update({
    # ---------------------------------------------------------------- models
    "models.nbody.FAGNN": [(V, "hidden", lambda t: _i("models.nbody:FAGNN")(hidden=0)),
                           (V, "mode", lambda t: _i("models.nbody:FAGNN")(mode="some")),
                           (V, "dim", lambda t: _i("models.nbody:FAGNN")(dim=0))],
    "models.nbody.TFGNN": [(V, "hidden_reps: cannot parse", lambda t: _i("models.nbody:TFGNN")(hidden_reps="3y1n")),
                           (V, "cutoff", lambda t: _i("models.nbody:TFGNN")(cutoff=-1.0)),
                           (V, "layers", lambda t: _i("models.nbody:TFGNN")(layers=0))],
    "experiments.nbody.NBodyExperiment": [(T, "config", lambda t: _i("experiments.nbody:NBodyExperiment")("cfg"))],
    "frames.base.Frames": [(V, "mode", lambda t: _i("frames.base:Frames")("some")),
                           (V, "n_samples", lambda t: _i("frames.base:Frames")("stochastic", n_samples=0)),
                           (V, "max_size", lambda t: _i("frames.base:Frames")(max_size=0))],
    "pretrained.normals.available_normal_models": [
        (FileNotFoundError, "is not a directory", lambda t: _i("pretrained.normals:available_normal_models")(_file(t, "f", "x")))],
    "models.graphs.FAGraphModel": [
        (T, "backbone", lambda t: _i("models.graphs:FAGraphModel")("gin")),
        (V, "frame", lambda t: _i("models.graphs:FAGraphModel")(_i("models.graphs:AdjacencyMLP")(1, 4), frame="laplace")),
        (V, "max_size", lambda t: _i("models.graphs:FAGraphModel")(_i("models.graphs:AdjacencyMLP")(1, 4), max_size=0)),
    ],
    "models.graphs.MessagePassingBaseline": [
        (V, "kind", lambda t: _i("models.graphs:MessagePassingBaseline")("gat", 2)),
        (V, "in_dim", lambda t: _i("models.graphs:MessagePassingBaseline")("gin", 0)),
        (V, "layers", lambda t: _i("models.graphs:MessagePassingBaseline")("gin", 2, layers=0)),
        (V, "x: contains NaN", lambda t: _i("models.graphs:MessagePassingBaseline")("gin", 3)(_NAN.float(), _ei((0, 1)))),
    ],
    "models.nbody.EGNN": [
        (V, "dim", lambda t: _i("models.nbody:EGNN")(dim=0)),
        (V, "hidden", lambda t: _i("models.nbody:EGNN")(hidden=0)),
        (V, "layers", lambda t: _i("models.nbody:EGNN")(layers=-1)),
    ],
    "models.normals.KNNPCANormals": [(V, "k", lambda t: _i("models.normals:KNNPCANormals")(k=2)(_P3.float())),
                                     (V, "k", lambda t: _i("models.normals:KNNPCANormals")(k=0)),
                                     (V, "k", lambda t: _i("models.normals:KNNPCANormals")(k=2.5))],
    "models.normals.PlaneFitHead": [(V, "edge_dim", lambda t: _i("models.normals:PlaneFitHead")(0, 4)),
                                    (V, "iterations", lambda t: _i("models.normals:PlaneFitHead")(4, 4, iterations=0))],
    "models.normals_geometry.line_to_normal": [
        (V, "P", lambda t: _i("models.normals:line_to_normal")(torch.eye(3)[:2], torch.ones(3))),
        (V, "steps", lambda t: _i("models.normals:line_to_normal")(torch.eye(3), torch.ones(3), steps=0)),
    ],
    "models._normals_common.tf_head_kind": [(V, "head", lambda t: _i("models._normals_common:tf_head_kind")("cone", "pca")),
                                            (V, "frames", lambda t: _i("models._normals_common:tf_head_kind")(None, "spectral"))],
    "geometry.dense_knn": [
        (V, "k", lambda t: _i("geometry:dense_knn")(_P3, _P3, 0)),
        (V, "k", lambda t: _i("geometry:dense_knn")(_P3, _P3, 9)),
        (V, "points|query", lambda t: _i("geometry:dense_knn")(_P3, _P3[:, :2], 2)),
        (V, "chunk_size", lambda t: _i("geometry:dense_knn")(_P3, _P3, 2, chunk_size=0)),
    ],
    "models.normals_geometry.open3d_normals": [
        (V, "pos", lambda t: _i("models.normals_geometry:open3d_normals")(_NAN)),
        (V, "knn|radius", lambda t: _i("models.normals_geometry:open3d_normals")(_P3, knn=None, radius=None)),
        (V, "knn", lambda t: _i("models.normals_geometry:open3d_normals")(_P3, knn=0)),
    ],
    "models.normals_local.weighted_plane_normal": [
        (V, "w", lambda t: _i("models.normals_local:weighted_plane_normal")(torch.rand(2, 5, 3), torch.rand(2, 4), torch.rand(2, 3))),
        (V, "steps", lambda t: _i("models.normals_local:weighted_plane_normal")(torch.rand(2, 5, 3), torch.rand(2, 5), torch.rand(2, 3), steps=0)),
    ],
    "demo.PointNetBackbone": [(V, "d", lambda t: _i("demo:PointNetBackbone")(d=0)),
                              (V, "hidden", lambda t: _i("demo:PointNetBackbone")(hidden=0))],
    "demo.DemoBudget": [(V, "n_train", lambda t: _i("demo:DemoBudget")(n_train=0)),
                        (V, "epochs", lambda t: _i("demo:DemoBudget")(epochs=-1))],
    "demo.run_demo": [(V, "seed", lambda t: _i("demo:run_demo")(t / "d", seed=-1)),
                      (V, "out_dir", lambda t: _i("demo:run_demo")(_file(t, "f", "x"), quick=True))],
    # ---------------------------------------------------------------- experiments
    "experiments.get_experiment_class": [(V, "name: unknown experiment", lambda t: _i("experiments:get_experiment_class")("mnist"))],
    "experiments.register_experiment": [(T, "cls", lambda t: _i("experiments:register_experiment")(int))],
    "experiments.graphs.classify": [(V, "dataset", lambda t: _i("experiments.graphs:classify")("zinc", "gin")),
                                    (V, "epochs", lambda t: _i("experiments.graphs:classify")("csl", "gin", 0))],
    "experiments.graphs.csl_folds": [(V, "folds", lambda t: _i("experiments.graphs:csl_folds")([0, 1] * 5, folds=1)),
                                     (V, "labels", lambda t: _i("experiments.graphs:csl_folds")([], folds=5))],
    "experiments.graphs_separation.embed_graphs": [(T, "model", lambda t: _i("experiments.graphs:embed_graphs")("gin", [])),
                                        (V, "chunks", lambda t: _i("experiments.graphs:embed_graphs")(nn.Identity(), [{"x": 1}]))],
    "experiments.graphs_separation.load_separation_graphs": [(V, "dataset", lambda t: _i("experiments.graphs:load_separation_graphs")("zinc")),
                                                  (FileNotFoundError, "data_dir", lambda t: _i("experiments.graphs:load_separation_graphs")("sr25", t))],
    "experiments.graphs_separation.relabelled_copies": [(T, "generator", lambda t: _i("experiments.graphs:relabelled_copies")([], 0)),
                                             (V, "graphs", lambda t: _i("experiments.graphs:relabelled_copies")([object()], torch.Generator()))],
    "geometry.scatter_sum": [
        (V, "values", lambda t: _i("geometry:scatter_sum")(torch.tensor(1.0), torch.zeros(1, dtype=torch.long), 2)),
        (V, "index", lambda t: _i("geometry:scatter_sum")(torch.ones(3, 2), torch.zeros(2, dtype=torch.long), 2)),
        (V, "index", lambda t: _i("geometry:scatter_sum")(torch.ones(3, 2), torch.zeros(3), 2)),
        (V, "num_nodes", lambda t: _i("geometry:scatter_sum")(torch.ones(3, 2), torch.zeros(3, dtype=torch.long), -1)),
    ],
    "geometry.gather_neighbours": [
        (V, "x", lambda t: _i("geometry:gather_neighbours")(_P3, torch.zeros(1, 2, 2, dtype=torch.long))),
        (V, "idx", lambda t: _i("geometry:gather_neighbours")(_P3[None], torch.zeros(1, 2, 2))),
        (V, "idx", lambda t: _i("geometry:gather_neighbours")(_P3[None], torch.zeros(2, 2, 2, dtype=torch.long))),
    ],
    "models.nbody.coulomb_vectors": [
        (V, "pos", lambda t: _i("models.nbody:coulomb_vectors")(_P3[0], torch.ones(8, 1), _ei((0, 1)))),
        (V, "charge", lambda t: _i("models.nbody:coulomb_vectors")(_P3, torch.ones(8), _ei((0, 1)))),
        (V, "edge_index", lambda t: _i("models.nbody:coulomb_vectors")(_P3, torch.ones(8, 1), torch.zeros(3, 2))),
        (V, "delta", lambda t: _i("models.nbody:coulomb_vectors")(_P3, torch.ones(8, 1), _ei((0, 1)), delta=0.0)),
    ],
    "datasets.nbody.egnn_npy_paths": [(FileNotFoundError, "directory", lambda t: _i("datasets.nbody:egnn_npy_paths")(t / "none", "train")),
                                     (FileNotFoundError, "missing EGNN", lambda t: _i("datasets.nbody:egnn_npy_paths")(t, "train")),
                                     (V, "split", lambda t: _i("datasets.nbody:egnn_npy_paths")(t, "dev"))],
    "report.save_figure": [(T, "fig", lambda t: _i("report:save_figure")("figure", t / "a.png")),
                           (T, "path", lambda t: _i("report:save_figure")(_figure(), 3))],
    "experiments.graphs_separation.with_degree": [(V, "graphs", lambda t: _i("experiments.graphs:with_degree")([object()]))],
    "experiments.nbody.rotate_batch": [(V, "Q", lambda t: _i("experiments.nbody:rotate_batch")({"pos": _P3}, torch.eye(2))),
                                       (V, "batch", lambda t: _i("experiments.nbody:rotate_batch")({"pos": _P3[:, :2]}, torch.eye(3)))],
    "experiments.nbody.rotation_about_z": [(V, "angle_deg", lambda t: _i("experiments.nbody:rotation_about_z")(float("nan"))),
                                           (T, "dtype", lambda t: _i("experiments.nbody:rotation_about_z")(10.0, torch.int64))],
    "experiments.normals.FreshPoints": [(V, "indices", lambda t: _i("experiments.normals:FreshPoints")([1, 2], [5]))],
    "experiments.normals.evaluate_model": [(V, "batch_size", lambda t: _i("experiments.normals:evaluate_model")(nn.Identity(), [1], batch_size=0)),
                                           (V, "n", lambda t: _i("experiments.normals:evaluate_model")(nn.Identity(), [1], n=0)),
                                           (V, "dataset", lambda t: _i("experiments.normals:evaluate_model")(nn.Identity(), []))],
    "datasets.normal_metrics.normal_metrics": [(V, "target|pred", lambda t: _i("datasets.normal_metrics:normal_metrics")(_P3, _P3[:3])),
                                           (V, "pred", lambda t: _i("datasets.normal_metrics:normal_metrics")(_NAN, _P3))],
    "experiments.normals.plot_error_histograms": [(V, "errors", lambda t: _i("experiments.normals:plot_error_histograms")({}, t / "h.png"))],
    "experiments.normals.plot_predictions": [(V, "indices", lambda t: _i("experiments.normals:plot_predictions")(nn.Identity(), [1], t / "p.png", indices=(5,)))],
    "experiments.normals.results_table": [(T, "rows", lambda t: _i("experiments.normals:results_table")([1, 2]))],
    "experiments.normals.setting_rotations": [(V, "setting", lambda t: _i("experiments.normals:setting_rotations")("so3/i"))],
    # ---------------------------------------------------------------- training, runs, reports
    "checkpoints.atomic_save": [(V, "path", lambda t: _i("checkpoints:atomic_save")({}, t)),
                                (OK, lambda r: r is None, lambda t: _i("checkpoints:atomic_save")({}, t / "new" / "c.pt"))],
    "checkpoints.atomic_write_text": [(V, "path", lambda t: _i("checkpoints:atomic_write_text")(t, "x")),
                                      (T, "text", lambda t: _i("checkpoints:atomic_write_text")(t / "a.txt", b"x"))],
    "distributed.init_distributed": [(V, "device", lambda t: _i("distributed:init_distributed")("gpu0"))],
    "distributed.resolve_device": [(V, "device", lambda t: _i("distributed:resolve_device")("gpu0")),
                                   (T, "device", lambda t: _i("distributed:resolve_device")(3))],
    "train.run_dir_for": [(V, "seed", lambda t: _i("train:run_dir_for")(
        _i("experiments.nbody:NBodyExperiment")(_i("experiments.nbody:NBodyExperimentConfig")()),
        _i("train:TrainConfig")(out=str(t)), -1))],
    "train.seed_everything": [(V, "seed", lambda t: _i("train:seed_everything")(-1)),
                              (T, "seed", lambda t: _i("train:seed_everything")("0"))],
    "train.train": [(T, "experiment", lambda t: _i("train:train")("nbody", _i("train:TrainConfig")(out=str(t)))),
                    (T, "config", lambda t: _i("train:train")(
                        _i("experiments.nbody:NBodyExperiment")(_i("experiments.nbody:NBodyExperimentConfig")()), {}))],
    "report.summarize": [(V, "runs", lambda t: _i("report:summarize")([{"nothing": 1}]))],
    "report.render_markdown": [(T, "rows", lambda t: _i("report:render_markdown")("rows"))],
    "report.plot_learning_curves": [(V, "path", lambda t: _i("report:plot_learning_curves")([], t))],
    "report.plot_rotation": [(V, "path", lambda t: _i("report:plot_rotation")([], t))],
    "testing.declared_types": [(T, "fn", lambda t: _i("testing:declared_types")(3))],
    # documented: untyped inputs pass unchanged, declared types of absent inputs are skipped
    "testing.transform_inputs": [(OK, lambda r: torch.equal(r["pos"], _P3), lambda t: _i("testing:transform_inputs")(
        {"pos": _P3}, {"vel": "1x1n"}, equiframe.EuclideanGroup.parse("O(3)").sample(1)))],
    # ---------------------------------------------------------------- pretrained
    "pretrained._registry.sha256_of": [(FileNotFoundError, None, lambda t: _i("pretrained._registry:sha256_of")(t / "missing.pt")),
                                       (V, "path", lambda t: _i("pretrained._registry:sha256_of")(t))],
    "pretrained.normals.normal_estimator": [(V, "name", lambda t: _i("pretrained.normals:normal_estimator")("no-such-model")),
                                            (V, "chunk_size", lambda t: _i("pretrained.normals:normal_estimator")(chunk_size=0))],
    "pretrained.normals.orient_normals": [
        (V, "normal", lambda t: _i("pretrained.normals:orient_normals")(_P3.numpy(), _P3.numpy()[:4])),
        (V, "pos", lambda t: _i("pretrained.normals:orient_normals")(_NAN.numpy(), _P3.numpy())),
        (V, "k", lambda t: _i("pretrained.normals:orient_normals")(_P3.numpy(), _P3.numpy(), k=0)),
    ],
    "pretrained.normals.save_normal_model": [
        (T, "model", lambda t: _i("pretrained.normals:save_normal_model")("m", "x", {}, metrics={}, trained={}, weights_dir=t)),
        (V, "name", lambda t: _i("pretrained.normals:save_normal_model")(nn.Linear(1, 1), "../x", {}, metrics={},
                                                                         trained={}, weights_dir=t)),
    ],
})
REGISTRY.update({k: "here" for k in CASES})


def _case_params():
    out = []
    for name, cases in CASES.items():
        for k, case in enumerate(cases):
            out.append(pytest.param(*case, id=f"{name}-{k}"))
    return out


@pytest.mark.parametrize(("exc", "match", "thunk"), _case_params())
def test_bad_input(exc, match, thunk, tmp_path):
    if exc == OK:  # odd input with a right answer: ``match`` checks it
        assert match(thunk(tmp_path))
        return
    with pytest.raises(exc, match=match):
        thunk(tmp_path)


# ------------------------------------------------------------------------------------------ coverage
def test_registry_covers_the_public_api():
    api = public_api()
    missing = sorted(set(api) - set(REGISTRY))
    assert not missing, f"public callables without bad-input tests (add them to REGISTRY / CASES): {missing}"
    stale = sorted(set(REGISTRY) - set(api))
    assert not stale, f"REGISTRY names that are not public callables (renamed or removed?): {stale}"
    assert len(api) >= 250


def test_elsewhere_entries_are_bad_input_tests():
    index = _raising_names()
    api = public_api()
    for name, entry in REGISTRY.items():
        if not isinstance(entry, Elsewhere):
            continue
        short = api[name].__name__
        for test in entry.tests:
            assert test in index, f"{name}: {test} does not exist or has no pytest.raises"
            inside, every = index[test]
            used = every if inspect.isclass(api[name]) else inside
            assert short in used, f"{name}: {test} does not call {short} in a pytest.raises block"


def test_exemptions_are_of_their_kind():
    api = public_api()
    for name, entry in REGISTRY.items():
        if not isinstance(entry, Exempt):
            continue
        obj = api[name]
        if entry.kind == "exception":
            assert inspect.isclass(obj) and issubclass(obj, BaseException), name
        elif entry.kind == "no-arguments":
            params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
            assert not params, (name, params)
        elif entry.kind == "record":
            assert dataclasses.is_dataclass(obj) or (inspect.isclass(obj) and issubclass(obj, tuple)), name
        elif entry.kind == "cli":
            params = list(inspect.signature(obj).parameters.values())
            assert params and ("argparse" in str(params[0].annotation) or obj.__name__.startswith("add_")), name
        else:
            raise AssertionError(f"{name}: unknown exemption kind {entry.kind!r}")


def test_every_cli_command_has_mistake_tests():
    """Every leaf command of ``equiframe`` (both spellings) is exercised by the command-line mistake tests."""
    import test_cli_grammar as g  # noqa: PLC0415

    from equiframe.cli import build_parser  # noqa: PLC0415

    def leaves(parser, prefix=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
        experiments = getattr(parser, "experiments", {})
        if not subs and not experiments:
            yield prefix
            return
        if experiments:
            yield prefix  # the older `eval PATH` / `report ROOT` spelling
        for name, p in experiments.items():
            yield from leaves(p, (*prefix, name))
        for a in subs:
            for name, p in a.choices.items():
                yield from leaves(p, (*prefix, name))

    argvs = [list(c[0]) for c in g.PATH_MISTAKES] + [list(c) for c in g.UNWRITABLE] + [list(c[0]) for c in g.MALFORMED]
    argvs += [list(c[0]) for mark in g.test_bad_option_values_are_one_line.pytestmark for c in mark.args[1]]
    for cmd in leaves(build_parser()):
        assert any(tuple(a[: len(cmd)]) == cmd for a in argvs), f"no mistake test for `equiframe {' '.join(cmd)}`"
