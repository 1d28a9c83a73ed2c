// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title CPX escrow and batched settlement of compute leases.
/// @notice Money model. Every unit the contract ever received (`Deposited`) is at any time in exactly one
/// of: a consumer's escrow account, the pot of a committed Merkle batch, or gone out of the contract as a
/// provider payment (`Claimed`, `LeaseSettled.amount`) or as a return to a consumer (`Refunded`,
/// `Reclaimed`, `RefundClaimed`, `LeafReclaimed`, `LeaseSettled.refund`). Hence
///     total deposited == total paid + total refunded + held,   held == sum(escrow) + sum(batch pots).
/// Why it holds: every function moves an amount between exactly two of those places after a checked
/// subtraction, so no account or pot can go below zero (a consumer's escrow is never overdrawn).
///
/// Merkle batches. A leaf is (leaseId, consumer, provider, amount, refund), hashed like OpenZeppelin's
/// StandardMerkleTree: keccak256(bytes.concat(keccak256(abi.encode(...)))), sorted-pair tree. The operator
/// commits the root together with one debit per consumer of the batch (the sum of amount + refund over
/// that consumer's leaves). The debit is taken from escrow at commit time, with a check, into the
/// batch's pot; the providers (or anyone relaying for them) later pull `amount` from the pot with a proof,
/// and the consumer pulls `refund`. So committing N leases costs O(1) storage writes for the batch plus
/// one write per distinct consumer, and a committed batch can always pay its claims: a consumer cannot
/// take back money already debited into a pot. Claims are bounded by the pot (an operator who commits
/// debits smaller than the leaves gets `BatchExhausted`, never other consumers' money). A provider that
/// has not claimed by the batch's claim deadline loses the claim: the consumer of that leaf can then pull
/// the leaf's amount back (`reclaimLeaf`).
///
/// Escape hatch. A consumer's escrow that has seen no deposit and no settlement for `reclaimWindow`
/// seconds can be withdrawn by the consumer alone (`reclaim`), even while paused: the operator cannot
/// freeze funds. Pausing stops money going anywhere but back to the consumer that owns it.
contract Settlement is AccessControl, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    struct Leaf {
        uint256 leaseId;
        address consumer;
        address provider;
        uint256 amount;
        uint256 refund;
    }

    enum BatchKind {
        None,
        Merkle,
        Direct
    }

    /// @dev Two slots: the root, and (remaining pot, claim deadline, kind) packed.
    struct Batch {
        bytes32 root;
        uint128 remaining;
        uint64 claimDeadline;
        BatchKind kind;
    }

    /// @dev One slot per consumer, so a debit is one SSTORE.
    struct Account {
        uint128 escrow;
        uint64 lastActivity;
    }

    /// @dev Two claim bits per lease (provider part, refund part): 128 leases share one storage word,
    /// and leases of a batch have nearby ids (database keys), so most claims write a warm word.
    uint256 private constant _PROVIDER_BIT = 1;
    uint256 private constant _REFUND_BIT = 2;

    /// @notice The escrowed asset; address(0) means the chain's native currency.
    IERC20 public immutable token;
    uint64 public claimWindow;
    uint64 public reclaimWindow;

    mapping(address consumer => Account) private _accounts;
    mapping(bytes32 batchId => Batch) private _batches;
    mapping(bytes32 batchId => mapping(uint256 word => uint256 bits)) private _claimBits;

    event Deposited(address indexed consumer, uint256 amount, uint256 escrow);
    event BatchCommitted(
        bytes32 indexed batchId, bytes32 root, uint256 total, uint256 leafCount, uint256 claimDeadline
    );
    event EscrowDebited(bytes32 indexed batchId, address indexed consumer, uint256 amount);
    event Claimed(bytes32 indexed batchId, address indexed provider, uint256[] leaseIds, uint256 amount);
    event RefundClaimed(bytes32 indexed batchId, address indexed consumer, uint256 leaseId, uint256 amount);
    event LeafReclaimed(bytes32 indexed batchId, address indexed consumer, uint256 leaseId, uint256 amount);
    event DirectSettled(bytes32 indexed batchId, uint256 total, uint256 leafCount);
    event LeaseSettled(
        bytes32 indexed batchId,
        uint256 indexed leaseId,
        address indexed provider,
        address consumer,
        uint256 amount,
        uint256 refund
    );
    event Refunded(address indexed consumer, uint256 amount);
    event Reclaimed(address indexed consumer, uint256 amount);
    event WindowsSet(uint256 claimWindow, uint256 reclaimWindow);

    error ZeroAmount();
    error ValueMismatch(uint256 sent, uint256 expected);
    error NativeNotAccepted();
    error InvalidBatchId();
    error EmptyRoot();
    error EmptyBatch();
    error LengthMismatch();
    error InvalidWindow();
    error BatchAlreadySettled(bytes32 batchId);
    error UnknownBatch(bytes32 batchId);
    error InsufficientEscrow(address consumer, uint256 available, uint256 needed);
    error InvalidProof();
    error LeafAlreadyClaimed(bytes32 batchId, uint256 leaseId);
    error BatchExhausted(bytes32 batchId);
    error ClaimWindowClosed(bytes32 batchId, uint256 deadline);
    error ClaimWindowOpen(bytes32 batchId, uint256 deadline);
    error ReclaimWindowOpen(address consumer, uint256 availableAt);
    error NothingToReclaim(address consumer);
    error MixedProviders();
    error LeasesNotAscending(uint256 leaseId);
    error NativeTransferFailed(address to, uint256 amount);

    constructor(IERC20 token_, address admin, address operator, uint64 claimWindow_, uint64 reclaimWindow_) {
        token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        _setWindows(claimWindow_, reclaimWindow_);
    }

    // ------------------------------------------------------------------ consumers

    /// @notice Put `amount` into the caller's escrow: send it as value (native) or approve it first (token).
    function deposit(uint256 amount) external payable whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (address(token) == address(0)) {
            if (msg.value != amount) revert ValueMismatch(msg.value, amount);
        } else {
            if (msg.value != 0) revert NativeNotAccepted();
            token.safeTransferFrom(msg.sender, address(this), amount);
        }
        Account storage account = _accounts[msg.sender];
        uint128 escrow = account.escrow + amount.toUint128();
        account.escrow = escrow;
        account.lastActivity = uint64(block.timestamp);
        emit Deposited(msg.sender, amount, escrow);
    }

    /// @notice Withdraw the caller's whole escrow once `reclaimWindow` has passed since its last deposit
    /// or settlement. Works while paused: it is the consumer's way out if the operator goes away.
    function reclaim() external nonReentrant {
        Account storage account = _accounts[msg.sender];
        uint256 amount = account.escrow;
        if (amount == 0) revert NothingToReclaim(msg.sender);
        uint256 availableAt = uint256(account.lastActivity) + reclaimWindow;
        if (block.timestamp < availableAt) revert ReclaimWindowOpen(msg.sender, availableAt);
        account.escrow = 0;
        emit Reclaimed(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    // ------------------------------------------------------------------ operator

    /// @notice Settle a batch by its Merkle root: debit each listed consumer into the batch's pot.
    /// @param debits per consumer, the sum of amount + refund over that consumer's leaves.
    /// @param leafCount informational (reconciliation); the contract does not rely on it.
    function commitBatch(
        bytes32 batchId,
        bytes32 root,
        address[] calldata consumers,
        uint256[] calldata debits,
        uint256 leafCount
    ) external onlyRole(OPERATOR_ROLE) whenNotPaused {
        if (root == bytes32(0)) revert EmptyRoot();
        if (consumers.length == 0) revert EmptyBatch();
        if (consumers.length != debits.length) revert LengthMismatch();
        Batch storage batch = _claimBatchId(batchId);
        uint256 total;
        for (uint256 i; i < consumers.length; ++i) {
            _debit(consumers[i], debits[i]);
            total += debits[i];
            emit EscrowDebited(batchId, consumers[i], debits[i]);
        }
        uint64 deadline = uint64(block.timestamp) + claimWindow;
        batch.root = root;
        batch.remaining = total.toUint128();
        batch.claimDeadline = deadline;
        batch.kind = BatchKind.Merkle;
        emit BatchCommitted(batchId, root, total, leafCount, deadline);
    }

    /// @notice Settle a small batch at once: debit each leaf's consumer, pay providers and refunds now.
    /// Leaves must be in strictly ascending leaseId order (no lease twice). A receiver that rejects
    /// payment makes the whole batch revert: settle such leases through a Merkle batch instead.
    function settleDirect(bytes32 batchId, Leaf[] calldata leaves)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        nonReentrant
    {
        if (leaves.length == 0) revert EmptyBatch();
        Batch storage batch = _claimBatchId(batchId);
        batch.kind = BatchKind.Direct;
        uint256 total;
        uint256 previous;
        for (uint256 i; i < leaves.length; ++i) {
            Leaf calldata leaf = leaves[i];
            if (i > 0 && leaf.leaseId <= previous) revert LeasesNotAscending(leaf.leaseId);
            previous = leaf.leaseId;
            uint256 debit = leaf.amount + leaf.refund;
            _debit(leaf.consumer, debit);
            total += debit;
            emit LeaseSettled(batchId, leaf.leaseId, leaf.provider, leaf.consumer, leaf.amount, leaf.refund);
        }
        emit DirectSettled(batchId, total, leaves.length);
        for (uint256 i; i < leaves.length; ++i) {
            Leaf calldata leaf = leaves[i];
            if (leaf.amount != 0) _pay(leaf.provider, leaf.amount);
            if (leaf.refund != 0) _pay(leaf.consumer, leaf.refund);
        }
    }

    /// @notice Return part of a consumer's escrow to it (cooperative withdrawal, no window).
    function refund(address consumer, uint256 amount) external onlyRole(OPERATOR_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage account = _accounts[consumer];
        uint256 escrow = account.escrow;
        if (escrow < amount) revert InsufficientEscrow(consumer, escrow, amount);
        account.escrow = uint128(escrow - amount);
        emit Refunded(consumer, amount);
        _pay(consumer, amount);
    }

    // ------------------------------------------------------------------ claims (anyone may relay)

    /// @notice Pay one leaf's `amount` from the batch pot to the leaf's provider.
    function claim(bytes32 batchId, Leaf calldata leaf, bytes32[] calldata proof)
        external
        whenNotPaused
        nonReentrant
    {
        Batch storage batch = _openBatch(batchId);
        if (leaf.amount == 0) revert ZeroAmount();
        if (!MerkleProof.verifyCalldata(proof, batch.root, leafHash(leaf))) revert InvalidProof();
        _markClaimed(batchId, leaf.leaseId, _PROVIDER_BIT);
        _takeFromPot(batch, batchId, leaf.amount);
        uint256[] memory leaseIds = new uint256[](1);
        leaseIds[0] = leaf.leaseId;
        emit Claimed(batchId, leaf.provider, leaseIds, leaf.amount);
        _pay(leaf.provider, leaf.amount);
    }

    /// @notice Pay several leaves of one provider with one OpenZeppelin multiproof and one transfer.
    /// `leaves` must be in the order the multiproof consumes them (as StandardMerkleTree.getMultiProof).
    function claimMany(
        bytes32 batchId,
        Leaf[] calldata leaves,
        bytes32[] calldata proof,
        bool[] calldata proofFlags
    ) external whenNotPaused nonReentrant {
        Batch storage batch = _openBatch(batchId);
        if (leaves.length == 0) revert EmptyBatch();
        address provider = leaves[0].provider;
        bytes32[] memory hashes = new bytes32[](leaves.length);
        uint256[] memory leaseIds = new uint256[](leaves.length);
        uint256 total;
        for (uint256 i; i < leaves.length; ++i) {
            Leaf calldata leaf = leaves[i];
            if (leaf.provider != provider) revert MixedProviders();
            if (leaf.amount == 0) revert ZeroAmount();
            hashes[i] = leafHash(leaf);
            leaseIds[i] = leaf.leaseId;
            total += leaf.amount;
            _markClaimed(batchId, leaf.leaseId, _PROVIDER_BIT);
        }
        if (!MerkleProof.multiProofVerifyCalldata(proof, proofFlags, batch.root, hashes)) revert InvalidProof();
        _takeFromPot(batch, batchId, total);
        emit Claimed(batchId, provider, leaseIds, total);
        _pay(provider, total);
    }

    /// @notice Pay one leaf's `refund` from the batch pot to the leaf's consumer (any time, even paused).
    function claimRefund(bytes32 batchId, Leaf calldata leaf, bytes32[] calldata proof) external nonReentrant {
        Batch storage batch = _merkleBatch(batchId);
        if (leaf.refund == 0) revert ZeroAmount();
        if (!MerkleProof.verifyCalldata(proof, batch.root, leafHash(leaf))) revert InvalidProof();
        _markClaimed(batchId, leaf.leaseId, _REFUND_BIT);
        _takeFromPot(batch, batchId, leaf.refund);
        emit RefundClaimed(batchId, leaf.consumer, leaf.leaseId, leaf.refund);
        _pay(leaf.consumer, leaf.refund);
    }

    /// @notice After the claim deadline, return a leaf's unclaimed provider amount to its consumer.
    function reclaimLeaf(bytes32 batchId, Leaf calldata leaf, bytes32[] calldata proof) external nonReentrant {
        Batch storage batch = _merkleBatch(batchId);
        if (block.timestamp <= batch.claimDeadline) revert ClaimWindowOpen(batchId, batch.claimDeadline);
        if (leaf.amount == 0) revert ZeroAmount();
        if (!MerkleProof.verifyCalldata(proof, batch.root, leafHash(leaf))) revert InvalidProof();
        _markClaimed(batchId, leaf.leaseId, _PROVIDER_BIT);
        _takeFromPot(batch, batchId, leaf.amount);
        emit LeafReclaimed(batchId, leaf.consumer, leaf.leaseId, leaf.amount);
        _pay(leaf.consumer, leaf.amount);
    }

    // ------------------------------------------------------------------ admin

    function setWindows(uint64 claimWindow_, uint64 reclaimWindow_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setWindows(claimWindow_, reclaimWindow_);
    }

    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ views

    function leafHash(Leaf calldata leaf) public pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(abi.encode(leaf.leaseId, leaf.consumer, leaf.provider, leaf.amount, leaf.refund))
            )
        );
    }

    function escrowOf(address consumer) external view returns (uint256 escrow, uint256 lastActivity) {
        Account storage account = _accounts[consumer];
        return (account.escrow, account.lastActivity);
    }

    function batchOf(bytes32 batchId)
        external
        view
        returns (BatchKind kind, bytes32 root, uint256 remaining, uint256 claimDeadline)
    {
        Batch storage batch = _batches[batchId];
        return (batch.kind, batch.root, batch.remaining, batch.claimDeadline);
    }

    function claimedOf(bytes32 batchId, uint256 leaseId) external view returns (bool provider, bool refunded) {
        uint256 bits = _claimBits[batchId][leaseId >> 7] >> ((leaseId & 127) << 1);
        return (bits & _PROVIDER_BIT != 0, bits & _REFUND_BIT != 0);
    }

    // ------------------------------------------------------------------ internals

    function _setWindows(uint64 claimWindow_, uint64 reclaimWindow_) private {
        // A consumer must not be able to reclaim escrow faster than providers can claim a batch.
        if (claimWindow_ == 0 || reclaimWindow_ < claimWindow_) revert InvalidWindow();
        claimWindow = claimWindow_;
        reclaimWindow = reclaimWindow_;
        emit WindowsSet(claimWindow_, reclaimWindow_);
    }

    function _claimBatchId(bytes32 batchId) private view returns (Batch storage batch) {
        if (batchId == bytes32(0)) revert InvalidBatchId();
        batch = _batches[batchId];
        if (batch.kind != BatchKind.None) revert BatchAlreadySettled(batchId);
    }

    function _merkleBatch(bytes32 batchId) private view returns (Batch storage batch) {
        batch = _batches[batchId];
        if (batch.kind != BatchKind.Merkle) revert UnknownBatch(batchId);
    }

    function _openBatch(bytes32 batchId) private view returns (Batch storage batch) {
        batch = _merkleBatch(batchId);
        if (block.timestamp > batch.claimDeadline) revert ClaimWindowClosed(batchId, batch.claimDeadline);
    }

    function _debit(address consumer, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        Account storage account = _accounts[consumer];
        uint256 escrow = account.escrow;
        if (escrow < amount) revert InsufficientEscrow(consumer, escrow, amount);
        account.escrow = uint128(escrow - amount);
        account.lastActivity = uint64(block.timestamp);
    }

    function _markClaimed(bytes32 batchId, uint256 leaseId, uint256 bit) private {
        mapping(uint256 => uint256) storage words = _claimBits[batchId];
        uint256 mask = bit << ((leaseId & 127) << 1);
        uint256 word = words[leaseId >> 7];
        if (word & mask != 0) revert LeafAlreadyClaimed(batchId, leaseId);
        words[leaseId >> 7] = word | mask;
    }

    function _takeFromPot(Batch storage batch, bytes32 batchId, uint256 amount) private {
        uint256 remaining = batch.remaining;
        if (remaining < amount) revert BatchExhausted(batchId);
        batch.remaining = uint128(remaining - amount);
    }

    function _pay(address to, uint256 amount) private {
        if (address(token) == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to, amount);
        } else {
            token.safeTransfer(to, amount);
        }
    }
}
